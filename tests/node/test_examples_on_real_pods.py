"""Examples applied with kubectl, served by real pods on the real node.

The server's readiness probe is answered by MLflow itself in the image `make images` built; the
seed tutorial runs outside the cluster through `kubectl port-forward`.
"""
from __future__ import annotations

import json

import pytest

from tests.operator_fixtures import get_json, wait_for
from tests.workload.conftest import RECHECK, last_json, tutorial_env
from tests.workload.server_env import TUTORIAL

pytestmark = pytest.mark.timeout(1500)

INSIDE = (
    "import json, pathlib; s = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l);"
    "p = pathlib.Path('/opt/mlflow/probe');"
    "r = 'writable'\n"
    "try:\n p.write_text('x')\nexcept OSError as e:\n r = e.strerror\n"
    "print(json.dumps({'uid': s['Uid'].split(), 'gid': s['Gid'].split(), 'capeff': s['CapEff'].strip(),"
    " 'capbnd': s['CapBnd'].strip(), 'nonewprivs': s['NoNewPrivs'].strip(), 'root': r}))"
)


def tutorial(real, url: str, **env: str) -> dict:
    return real.timed("tutorial", lambda: last_json(real.client(TUTORIAL, tutorial_env(url, **env)).stdout))


def test_quickstart_real_pods_tutorial_hardening_and_restart(real):
    """02-sqlite.yaml (`spec: {}`): Ready with a real pod on a dynamically provisioned volume; the
    tutorial through `kubectl port-forward`; the pod as Pod Security `restricted` wants it; a
    deleted pod comes back on the same volume with the same runs."""
    real.apply(real.example("02-sqlite.yaml"))
    live = real.timed("ready", lambda: real.wait_ready("quickstart", MigrationsApplied="True"))
    pvc = get_json(real.cluster, "pvc", "quickstart-data", "-n", real.namespace)
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["storageClassName"], pvc["status"]
    [pod] = real.ready_pods("quickstart")
    mlflow = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "mlflow")
    assert mlflow["ready"] and mlflow["restartCount"] == 0, mlflow
    migrate = next(c for c in pod["status"]["initContainerStatuses"] if c["name"] == "migrate")
    assert migrate["state"]["terminated"]["exitCode"] == 0, migrate

    forward = real.port_forward("quickstart")
    out = tutorial(real, forward.url)
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out

    inside = real.kubectl("exec", "-n", real.namespace, pod["metadata"]["name"], "-c", "mlflow", "--",
                          "python3", "-c", INSIDE).stdout
    facts = json.loads(inside)
    assert facts["uid"] == ["10001"] * 4 and facts["gid"][0] == "10001", facts
    assert facts["capeff"] == "0" * 16 and facts["capbnd"] == "0" * 16, facts
    assert facts["nonewprivs"] == "1", facts
    assert facts["root"] == "Read-only file system", facts
    logs = real.kubectl("logs", "-n", real.namespace, pod["metadata"]["name"], "-c", "mlflow").stdout
    assert "Uvicorn running" in logs or "Application startup complete" in logs, logs[-2000:]

    forward.stop()
    old_uid = pod["metadata"]["uid"]
    real.kubectl("delete", "pod", "-n", real.namespace, pod["metadata"]["name"], "--wait=false")
    real.timed("pod back", lambda: wait_for(
        "a new Ready quickstart pod",
        lambda: [p for p in real.ready_pods("quickstart") if p["metadata"]["uid"] != old_uid],
        timeout=300, interval=1, explain=real.explain))
    real.wait_ready("quickstart")
    again = real.port_forward("quickstart")
    checked = last_json(real.client(RECHECK, {"MLFLOW_TRACKING_URI": again.url, "RUN_ID": out["run_id"]}).stdout)
    assert checked["run_id"] == out["run_id"]
