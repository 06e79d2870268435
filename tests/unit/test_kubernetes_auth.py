"""spec.auth.type Kubernetes: what the operator renders, and the MLflow-request-to-RBAC-verb mapping
of the image's token check (pure; the checks themselves run on the real node, tests/node)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mlflow_operator.render import render

pytestmark = pytest.mark.unit

KUBEAUTH = Path(__file__).parents[2] / "server-image/entrypoint/mlflow_entrypoint/kubeauth.py"


def _kubeauth():
    """The image's module, by path: the operator's environment does not install the entrypoint."""
    if "kubeauth_under_test" not in sys.modules:
        spec = importlib.util.spec_from_file_location("kubeauth_under_test", KUBEAUTH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules["kubeauth_under_test"]


def ts(auth: dict, **spec) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
            "metadata": {"name": "team", "namespace": "ml", "uid": "u-1"}, "spec": {"auth": auth, **spec}}


def by_kind(manifests: list[dict], kind: str) -> list[dict]:
    return [m for m in manifests if m["kind"] == kind]


def test_kubernetes_auth_renders_the_review_binding_and_the_servers_own_token():
    manifests = render(ts({"type": "Kubernetes"}))
    [crb] = by_kind(manifests, "ClusterRoleBinding")
    assert crb["metadata"]["name"] == "mlflow-operator:ml:team"
    assert "namespace" not in crb["metadata"] and "ownerReferences" not in crb["metadata"]
    assert crb["metadata"]["labels"]["mlflow-operator.dev/namespace"] == "ml"
    assert crb["metadata"]["annotations"]["mlflow-operator.dev/owner-uid"] == "u-1"
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"}
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "team", "namespace": "ml"}]
    [deployment] = by_kind(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False  # only the server container gets a token
    [server] = pod["containers"]
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    assert mounts["kube-api-access"]["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    for init in pod.get("initContainers", []):
        assert "kube-api-access" not in {m["name"] for m in init["volumeMounts"]}, init["name"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "kube-api-access"]
    token = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert "audience" not in token  # the API server's own: the server talks to nothing else
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["MLFLOW_OPERATOR_AUTH"] == "kubernetes"
    assert env["MLFLOW_OPERATOR_KUBERNETES_AUDIENCE"] == "mlflow-operator.dev/ml/team"
    assert (env["MLFLOW_OPERATOR_KUBERNETES_NAMESPACE"], env["MLFLOW_OPERATOR_KUBERNETES_NAME"]) == ("ml", "team")
    assert not by_kind(manifests, "Secret")  # nothing generated: no password, no session key


def test_audience_can_be_set_and_other_modes_render_no_binding():
    manifests = render(ts({"type": "Kubernetes", "kubernetes": {"audience": "https://mlflow.example.com"}}))
    [deployment] = by_kind(manifests, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_OPERATOR_KUBERNETES_AUDIENCE"] == "https://mlflow.example.com"
    for auth in ({"type": "None"}, {"type": "Basic"}):
        manifests = render(ts(auth))
        assert not by_kind(manifests, "ClusterRoleBinding"), auth
        pod = by_kind(manifests, "Deployment")[0]["spec"]["template"]["spec"]
        assert "kube-api-access" not in {v["name"] for v in pod["volumes"]}, auth


@pytest.mark.parametrize("method,path,verb", [
    ("GET", "/api/2.0/mlflow/runs/get", "get"),
    ("GET", "/ajax-api/2.0/mlflow/experiments/get-by-name", "get"),
    ("GET", "/api/2.0/mlflow/metrics/get-history", "get"),
    ("GET", "/", "get"),
    ("GET", "/static-files/index.html", "get"),
    ("POST", "/graphql", "get"),
    ("POST", "/api/2.0/mlflow/runs/search", "list"),
    ("POST", "/api/2.0/mlflow/experiments/search", "list"),
    ("GET", "/api/2.0/mlflow/registered-models/search", "list"),
    ("GET", "/api/2.0/mlflow/artifacts/list", "list"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts", "list"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model.pkl", "get"),
    ("POST", "/api/2.0/mlflow/experiments/create", "create"),
    ("POST", "/api/2.0/mlflow/runs/create", "create"),
    ("POST", "/api/2.0/mlflow/runs/log-batch", "create"),
    ("POST", "/api/2.0/mlflow/runs/log-metric", "create"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/notes.txt", "create"),
    ("POST", "/api/2.0/mlflow/runs/update", "update"),
    ("POST", "/api/2.0/mlflow/runs/set-tag", "update"),
    ("POST", "/api/2.0/mlflow/experiments/restore", "update"),
    ("PATCH", "/api/2.0/mlflow/registered-models/update", "update"),
    ("POST", "/api/2.0/mlflow/runs/delete", "delete"),
    ("POST", "/api/2.0/mlflow/runs/delete-tag", "delete"),
    ("DELETE", "/api/2.0/mlflow/registered-models/delete", "delete"),
    ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/notes.txt", "delete"),
])
def test_each_mlflow_request_maps_to_one_rbac_verb(method, path, verb):
    assert _kubeauth().verb_for(method, path) == verb


def test_bearer_token_parsing_refuses_other_schemes():
    k = _kubeauth()
    assert k._bearer_token([(b"authorization", b"Bearer abc.def")]) == "abc.def"
    assert k._bearer_token([(b"authorization", b"bearer  abc")]) == "abc"
    assert k._bearer_token([(b"authorization", b"Basic YWRtaW46eA==")]) is None
    assert k._bearer_token([(b"authorization", b"Bearer ")]) is None
    assert k._bearer_token([]) is None
