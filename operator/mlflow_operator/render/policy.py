"""PodDisruptionBudgets, the HorizontalPodAutoscaler and the NetworkPolicy."""
from __future__ import annotations

from typing import Any

from ..api import TrackingServer
from ..api import derived as d
from ..constants import HTTP_PORT_NAME, METRICS_PORT_NAME
from . import naming


def _pdb(ts: TrackingServer, name: str, component: str) -> dict[str, Any]:
    budget = ts.spec.pod_disruption_budget
    spec: dict[str, Any] = {"selector": {"matchLabels": naming.selector_labels(ts, component)}}
    if budget.min_available is not None:
        spec["minAvailable"] = budget.min_available
    else:
        spec["maxUnavailable"] = budget.max_unavailable if budget.max_unavailable is not None else 1
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": naming.object_meta(ts, name, component),
        "spec": spec,
    }


def disruption_budgets(ts: TrackingServer) -> list[dict[str, Any]]:
    """A budget only where several pods run: for a single pod it would either block node
    drains (minAvailable 1) or mean nothing."""
    if not ts.spec.pod_disruption_budget.enabled:
        return []
    result = []
    if d.tracking_pods_may_be_many(ts.spec):
        result.append(_pdb(ts, naming.tracking_name(ts), naming.TRACKING))
    if ts.spec.artifacts.mode == "Split" and d.artifacts_pod_replicas(ts.spec) > 1:
        result.append(_pdb(ts, naming.artifacts_name(ts), naming.ARTIFACTS))
    return result


def migration_guard(ts: TrackingServer) -> dict[str, Any]:
    """While a migration runs (or failed), the previous version's pods are what serves, and one
    that restarts may refuse the half-migrated or newer schema: no voluntary eviction (node drain)
    may take them until the migration succeeded. The reconciler applies this budget only then and
    prunes it once the gate opens."""
    selector = {
        "matchLabels": naming.instance_labels(ts),
        "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                              "values": [naming.TRACKING, naming.ARTIFACTS]}],
    }
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": naming.object_meta(ts, naming.migration_guard_name(ts), naming.MIGRATION),
        "spec": {"selector": selector, "maxUnavailable": 0},
    }


def autoscaler(ts: TrackingServer) -> dict[str, Any]:
    scaling = ts.spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": naming.object_meta(ts, naming.tracking_name(ts), naming.TRACKING),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": naming.tracking_name(ts)},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu_utilization_percentage},
                    },
                }
            ],
        },
    }


def network_policy(ts: TrackingServer) -> dict[str, Any]:
    """Only port 5000 (and the metrics port) of our pods, only from this namespace and the listed
    peers (Prometheus among them). Egress stays open: databases and object stores live anywhere."""
    peers = [{"podSelector": {}}] + [peer.dump() for peer in ts.spec.network_policy.ingress_from or ()]
    ports = [{"protocol": "TCP", "port": HTTP_PORT_NAME}]
    if ts.spec.metrics.enabled:
        ports.append({"protocol": "TCP", "port": METRICS_PORT_NAME})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": naming.object_meta(ts, naming.tracking_name(ts), naming.TRACKING),
        "spec": {
            "podSelector": {"matchLabels": naming.instance_labels(ts)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": ports}],
        },
    }
