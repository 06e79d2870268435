"""Every kind the operator prunes is pruned: one TrackingServer that renders each of them, then a
spec that asks for none (the chart grants delete on these kinds for exactly this)."""
from __future__ import annotations

import json

from tests.cluster.test_operator_reconcile import (  # noqa: F401 - fixtures
    create_referenced_secrets,
    database_listener,
    optional_crds,
)
from tests.operator_fixtures import get_json, load_example, wait_for, wait_for_conditions

OPTIONAL_PARTS = {
    "gateway": ("httproute.gateway.networking.k8s.io", "HTTPRoute"),
    "autoscaling": ("horizontalpodautoscaler", "HorizontalPodAutoscaler"),
    "networkPolicy": ("networkpolicy", "NetworkPolicy"),
    "podDisruptionBudget": ("poddisruptionbudget", "PodDisruptionBudget"),
    "metrics": ("servicemonitor.monitoring.coreos.com", "ServiceMonitor"),
}


def test_every_prunable_kind_goes_when_the_spec_drops_it(cluster, operator, namespace, database_listener,  # noqa: F811
                                                          optional_crds):  # noqa: F811
    ts = load_example("09-gateway-azure.yaml", namespace)
    ts["spec"].update(networkPolicy={"enabled": True}, podDisruptionBudget={"maxUnavailable": 1},
                      metrics={"enabled": True, "serviceMonitor": {"enabled": True}})
    create_referenced_secrets(cluster, ts, database_listener)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(ts))
    name = ts["metadata"]["name"]
    wait_for_conditions(cluster, namespace, name, timeout=180, op=operator, Ready="True")
    for resource, kind in OPTIONAL_PARTS.values():
        assert get_json(cluster, resource, name, "-n", namespace), f"{kind} {name} was not created"

    removals = [{"op": "remove", "path": f"/spec/{field}"} for field in OPTIONAL_PARTS]
    cluster.kubectl("patch", "trackingserver", name, "-n", namespace, "--type=json", "-p", json.dumps(removals))
    for resource, kind in OPTIONAL_PARTS.values():
        wait_for(f"{kind} {name} to be pruned", lambda r=resource: get_json(cluster, r, name, "-n", namespace) is None,
                 timeout=90, explain=lambda: operator.logs(20))
    wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True")
