"""The chart's RBAC grants exactly what the operator uses: compared, rule by rule, with the requests
the operator made during this session's cluster tests (the API server's audit log), failing on a
grant nothing used and on a request the API server refused.

Runs after every other test (tests/cluster/conftest.py). Only a session that ran the whole cluster
tier can tell an unused grant; a partial run checks refusals only.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.operator_fixtures import CHART, OPERATOR_NAMESPACE

# Granted, and needed, though never a request of the operator's own:
NOT_REQUESTS = {
    ("", "persistentvolumeclaims", "delete"):
        "OwnerReferencesPermissionEnforcement: an ownerReference (retentionPolicy Delete) needs delete on the object",
    ("", "secrets", "delete"):
        "OwnerReferencesPermissionEnforcement: an ownerReference (retentionPolicy Delete) needs delete on the object",
    ("mlflow-operator.dev", "trackingservers/finalizers", "update"):
        "OwnerReferencesPermissionEnforcement checks it for every child with blockOwnerDeletion",
    ("kopf.dev", "clusterkopfpeerings", "list"): "the chart runs peering; the tests' cluster-wide operator is standalone",
    ("kopf.dev", "clusterkopfpeerings", "watch"): "the chart runs peering; the tests' cluster-wide operator is standalone",
    ("", "serviceaccounts", "delete"): "pruned like every child kind, though every spec renders its ServiceAccount",
    ("kopf.dev", "clusterkopfpeerings", "patch"): "the chart runs peering; the tests' cluster-wide operator is standalone",
    ("rbac.authorization.k8s.io", "clusterroles", "bind"):
        "RBAC's escalation check: creating the Kubernetes-auth ClusterRoleBinding to system:auth-delegator",
}


def chart_grants(cluster, values: list[str]) -> set[tuple[str, str, str]]:
    args = ["template", "mlflow-operator", str(CHART), "--namespace", OPERATOR_NAMESPACE, "--show-only", "templates/rbac.yaml"]
    for value in values:
        args += ["--set", value]
    grants = set()
    for doc in yaml.safe_load_all(cluster.helm(*args).stdout):
        if doc and doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            grants.add((group, resource, verb))
    return grants


def operator_users(requests) -> set[str]:
    """The chart's ServiceAccounts (every release of the tests) in the operator's namespace."""
    prefix = f"system:serviceaccount:{OPERATOR_NAMESPACE}:mlflow-operator"
    return {r.user for r in requests if r.user.startswith(prefix)}


def whole_cluster_tier_ran(request: pytest.FixtureRequest) -> bool:
    files = {p.name for p in Path(__file__).parent.glob("test_*.py")}
    ran = {item.path.name for item in request.session.items}
    return files <= ran and not request.config.option.keyword


def test_chart_rbac_grants_exactly_what_the_operator_used(cluster, request):
    everyone = cluster.audit_requests()
    # Resource requests only: discovery (/api, /apis, /version) is every user's, not the chart's to grant.
    requests = [r for r in everyone if r.user in operator_users(everyone) and r.resource]
    if not requests:
        pytest.skip("no operator ran in this session")
    refused = sorted({(r.api_group, r.resource, r.verb, r.namespace) for r in requests if not r.authorized})
    assert not refused, f"the API server refused the operator (missing grants): {refused}"

    used = set()
    for r in requests:
        if not r.authorized:
            continue
        used.add((r.api_group, r.resource, r.verb))
        if r.verb == "patch" and r.code == 201:
            used.add((r.api_group, r.resource, "create"))  # server-side apply created it: needs create
    granted = chart_grants(cluster, []) | chart_grants(cluster, ["watchNamespaces={a}"])
    if not whole_cluster_tier_ran(request):
        pytest.skip("only a run of the whole cluster tier can tell an unused grant; no request was refused")
    unused = sorted(g for g in granted - used if g not in NOT_REQUESTS)
    assert not unused, f"granted by the chart but never used by the operator: {unused}"
    assert not used - granted, f"used without a grant (impossible unless the chart changed): {sorted(used - granted)}"
