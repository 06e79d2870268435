"""spec.auth.type Kubernetes on the real node: ServiceAccount tokens checked by the API server's
TokenReview, requests authorized by SubjectAccessReviews against RoleBindings.

One TrackingServer (SQLite, proxied artifacts on its volume). A pod whose ServiceAccount has a
RoleBinding logs a run from inside the cluster with a projected token of the server's audience;
the seed tutorial runs from outside through `kubectl port-forward` with a `kubectl create token`
token. Refusals: no token, a token for the API server's audience, a forged one, a deleted
ServiceAccount's (401); a ServiceAccount without a RoleBinding, a read-only one writing (403).
No token value appears in the server's or the operator's log, the events or the status.
"""
from __future__ import annotations

import json
import time

import pytest

from tests.operator_fixtures import get_json, wait_for
from tests.workload.server_env import last_json, tutorial_env
from tests.workload.server_env import TUTORIAL

pytestmark = [pytest.mark.node, pytest.mark.timeout(1500)]

NAME = "team"
TOKEN_DIR = "/var/run/secrets/mlflow"
# The server caches review answers this long (mlflow_entrypoint.kubeauth.CACHE_SECONDS), plus slack.
CACHE_SECONDS = 12

IN_POD_CLIENT = r"""
import json, os, tempfile
import mlflow
os.environ["MLFLOW_TRACKING_TOKEN"] = open("/var/run/secrets/mlflow/token").read().strip()
mlflow.set_experiment("from-a-pod")
with mlflow.start_run() as run:
    mlflow.log_param("where", "pod")
    mlflow.log_metric("m", 1.5)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "notes.txt")
        open(p, "w").write("hello\n")
        mlflow.log_artifact(p)
got = mlflow.get_run(run.info.run_id)
assert got.data.params == {"where": "pod"}, got.data.params
notes = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/notes.txt")
assert open(notes).read() == "hello\n"
print(json.dumps({"run_id": run.info.run_id}))
"""

STATUS_OF = r"""
import json, os, requests
url = os.environ["URL"]
headers = {"Authorization": os.environ["AUTH"]} if os.environ.get("AUTH") else {}
out = {}
out["search"] = requests.post(url + "/api/2.0/mlflow/experiments/search", json={"max_results": 5}, headers=headers, timeout=30).status_code
out["create"] = requests.post(url + "/api/2.0/mlflow/experiments/create", json={"name": os.environ["EXP"]}, headers=headers, timeout=30).status_code
out["get_artifact"] = requests.get(url + "/api/2.0/mlflow-artifacts/artifacts/x/y.txt", headers=headers, timeout=30).status_code
out["ui"] = requests.get(url + "/", headers=headers, timeout=30).status_code
out["health"] = requests.get(url + "/health", timeout=30).status_code
r = requests.post(url + "/api/2.0/mlflow/experiments/search", json={"max_results": 5}, headers=headers, timeout=30)
out["message"] = r.text[:300]
print(json.dumps(out))
"""


def role(namespace: str, name: str, verbs: list[str]) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name, "namespace": namespace},
            "rules": [{"apiGroups": ["mlflow-operator.dev"], "resources": ["trackingservers/api"],
                       "resourceNames": [NAME], "verbs": verbs}]}


def binding(namespace: str, role_name: str, account: str) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": f"{account}-{role_name}", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]}


def client_pod(namespace: str, account: str, image: str, audience: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"client-{account}", "namespace": namespace},
        "spec": {
            "serviceAccountName": account, "automountServiceAccountToken": False, "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "client", "image": image, "imagePullPolicy": "Never",
                "command": ["python3", "-c", "import time; time.sleep(3600)"],
                "env": [{"name": "MLFLOW_TRACKING_URI", "value": f"http://{NAME}.{namespace}.svc:5000"},
                        {"name": "HOME", "value": "/tmp"}, {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
                        {"name": "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "value": "0"}],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True},
                "volumeMounts": [{"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
                                 {"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [
                {"name": "token", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "audience": audience, "expirationSeconds": 3600}}]}},
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }


def test_kubernetes_auth_tokens_and_rolebindings(real, node_images):
    ns = real.namespace
    audience = f"mlflow-operator.dev/{ns}/{NAME}"
    real.apply({"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
                "metadata": {"name": NAME, "namespace": ns}, "spec": {"auth": {"type": "Kubernetes"}}})
    for account in ("writer", "reader", "stranger", "doomed"):
        real.kubectl("create", "serviceaccount", account, "-n", ns)
    real.apply(role(ns, "mlflow-write", ["get", "list", "create", "update", "delete"]))
    real.apply(role(ns, "mlflow-read", ["get", "list"]))
    for account, role_name in (("writer", "mlflow-write"), ("doomed", "mlflow-write"), ("reader", "mlflow-read")):
        real.apply(binding(ns, role_name, account))
    real.timed("ready", lambda: real.wait_ready(NAME))

    # What the operator gave the server: the reviews and nothing more, bound to its own account.
    crb = get_json(real.cluster, "clusterrolebinding", f"mlflow-operator:{ns}:{NAME}")
    assert crb["roleRef"]["name"] == "system:auth-delegator", crb
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}], crb
    can = real.kubectl("auth", "can-i", "--list", f"--as=system:serviceaccount:{ns}:{NAME}", "-n", ns).stdout
    assert "tokenreviews.authentication.k8s.io" in can and "subjectaccessreviews.authorization.k8s.io" in can, can
    assert "secrets" not in can and "trackingservers" not in can, can

    # A pod in the cluster, its ServiceAccount bound to a write role: logs a run, artifact included.
    server_image = node_images["server"].ref
    real.apply(client_pod(ns, "writer", server_image, audience))
    wait_for("the writer's client pod running", lambda: get_json(real.cluster, "pod", "client-writer", "-n", ns)
             .get("status", {}).get("phase") == "Running", timeout=300, interval=1, explain=real.explain)
    ran = real.kubectl("exec", "-n", ns, "client-writer", "--", "python3", "-c", IN_POD_CLIENT, check=False)
    assert ran.returncode == 0, f"{ran.stdout[-2000:]}\n{ran.stderr[-4000:]}\n{real.explain()}"
    assert last_json(ran.stdout)["run_id"]

    forward = real.port_forward(NAME)

    def statuses(auth: str | None, exp: str) -> dict:
        env = {"URL": forward.url, "EXP": exp}
        if auth:
            env["AUTH"] = auth
        return last_json(real.client(STATUS_OF, env).stdout)

    def token(account: str, aud: str = audience) -> str:
        return real.kubectl("create", "token", account, "-n", ns, f"--audience={aud}", "--duration=10m").stdout.strip()

    writer_token = token("writer")
    # The seed tutorial from outside the cluster, with the writer's token.
    out = real.timed("tutorial", lambda: last_json(real.client(TUTORIAL, tutorial_env(
        forward.url, MLFLOW_TRACKING_TOKEN=writer_token)).stdout))
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out

    # Reads and writes need a binding; the read role reads only.
    writer = statuses(f"Bearer {writer_token}", "w-exp")
    assert (writer["search"], writer["create"], writer["ui"], writer["health"]) == (200, 200, 200, 200), writer
    reader_token = token("reader")
    reader = statuses(f"Bearer {reader_token}", "r-exp")
    assert (reader["search"], reader["create"], reader["ui"]) == (200, 403, 200), reader
    stranger = statuses(f"Bearer {token('stranger')}", "s-exp")
    assert (stranger["search"], stranger["create"], stranger["get_artifact"]) == (403, 403, 403), stranger
    assert f"system:serviceaccount:{ns}:stranger may not list" in stranger["message"], stranger

    # Authentication: no token, the API server's audience, a forged token, Basic credentials.
    for what, auth in (("none", None), ("api-server audience", f"Bearer {token('writer', 'https://kubernetes.default.svc')}"),
                       ("forged", "Bearer " + writer_token[:-8] + "AAAAAAAA"), ("basic", "Basic YWRtaW46cGFzc3dvcmQ=")):
        got = statuses(auth, "x-exp")
        assert (got["search"], got["create"], got["get_artifact"], got["ui"]) == (401, 401, 401, 401), (what, got)
        assert got["health"] == 200, (what, got)

    # A deleted ServiceAccount's token stops working once the server's cache has let it go.
    doomed_token = token("doomed")
    assert statuses(f"Bearer {doomed_token}", "d-exp")["create"] == 200
    real.kubectl("delete", "serviceaccount", "doomed", "-n", ns)
    time.sleep(CACHE_SECONDS)
    gone = statuses(f"Bearer {doomed_token}", "d2-exp")
    assert (gone["search"], gone["create"]) == (401, 401), gone

    # No token value anywhere: server log, operator log, events, status.
    tokens = [writer_token, reader_token, doomed_token]
    [pod] = real.ready_pods(NAME)
    server_log = real.kubectl("logs", "-n", ns, pod["metadata"]["name"], "-c", "mlflow").stdout
    assert "forbidden: system:serviceaccount:" in server_log, server_log[-2000:]
    places = {
        "server log": server_log,
        "operator log": real.operator.logs(2000),
        "events": real.kubectl("get", "events", "-n", ns, "-o", "json").stdout,
        "status": json.dumps(get_json(real.cluster, "trackingserver", NAME, "-n", ns).get("status")),
    }
    for where, text in places.items():
        for t in tokens:
            # the signature part is what makes a token a credential
            assert t.rsplit(".", 1)[-1] not in text, f"a token's signature is in the {where}"

    # Dropping Kubernetes auth takes the server's ClusterRoleBinding away again.
    real.kubectl("patch", "trackingserver", NAME, "-n", ns, "--type=merge", "-p", json.dumps({"spec": {"auth": {"type": "None"}}}))
    wait_for("the ClusterRoleBinding pruned", lambda: real.kubectl(
        "get", "clusterrolebinding", f"mlflow-operator:{ns}:{NAME}", check=False).returncode != 0,
        timeout=120, interval=1, explain=real.explain)
