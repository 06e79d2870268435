"""spec.auth.type Kubernetes on the real control plane: the operator (with the chart's RBAC) binds
the server's ServiceAccount to system:auth-delegator with a cluster-scoped ClusterRoleBinding, which
garbage collection cannot follow to a namespaced owner, so the operator itself deletes it when the
spec drops Kubernetes auth and when the TrackingServer is deleted. The tokens and reviews
themselves are tested on the real node (tests/node/test_kubernetes_auth.py)."""
from __future__ import annotations

import json

from tests.operator_fixtures import get_json, wait_for, wait_for_conditions


def server(namespace: str, name: str, auth: str) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"auth": {"type": auth}}}


def test_review_binding_follows_the_spec_and_goes_with_the_trackingserver(cluster, operator, namespace):
    binding = f"mlflow-operator:{namespace}:team"
    cluster.kubectl("apply", "-f", "-", input=json.dumps(server(namespace, "team", "Kubernetes")))
    wait_for_conditions(cluster, namespace, "team", timeout=180, op=operator, Ready="True")
    crb = get_json(cluster, "clusterrolebinding", binding)
    assert crb is not None, operator.logs(30)
    uid = get_json(cluster, "trackingserver", "team", "-n", namespace)["metadata"]["uid"]
    assert crb["metadata"]["annotations"]["mlflow-operator.dev/owner-uid"] == uid
    assert crb["roleRef"]["name"] == "system:auth-delegator"
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "team", "namespace": namespace}]
    # The server may create the reviews, and nothing else was granted to it.
    account = f"system:serviceaccount:{namespace}:team"
    for resource, expected in (("tokenreviews.authentication.k8s.io", "yes"),
                               ("subjectaccessreviews.authorization.k8s.io", "yes"), ("secrets", "no")):
        got = cluster.kubectl("auth", "can-i", "create", resource, f"--as={account}", check=False).stdout.strip()
        assert got == expected, (resource, got)

    cluster.kubectl("patch", "trackingserver", "team", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"auth": {"type": "None"}}}))
    wait_for("the binding pruned", lambda: get_json(cluster, "clusterrolebinding", binding) is None,
             timeout=90, explain=lambda: operator.logs(20))

    cluster.kubectl("patch", "trackingserver", "team", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"auth": {"type": "Kubernetes"}}}))
    wait_for("the binding back", lambda: get_json(cluster, "clusterrolebinding", binding) is not None,
             timeout=90, explain=lambda: operator.logs(20))
    # Another server's binding is not this one's to delete.
    other = f"mlflow-operator:{namespace}:other"
    cluster.kubectl("apply", "-f", "-", input=json.dumps(server(namespace, "other", "Kubernetes")))
    wait_for("the other server's binding", lambda: get_json(cluster, "clusterrolebinding", other) is not None,
             timeout=90, explain=lambda: operator.logs(20))
    cluster.kubectl("delete", "trackingserver", "team", "-n", namespace)
    wait_for("the binding deleted with its TrackingServer",
             lambda: get_json(cluster, "clusterrolebinding", binding) is None,
             timeout=90, explain=lambda: operator.logs(20))
    assert get_json(cluster, "clusterrolebinding", other) is not None
    cluster.kubectl("delete", "trackingserver", "other", "-n", namespace)
    wait_for("the other binding deleted", lambda: get_json(cluster, "clusterrolebinding", other) is None,
             timeout=90, explain=lambda: operator.logs(20))
