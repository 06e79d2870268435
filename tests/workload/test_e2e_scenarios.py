"""End to end, scenarios 1-6: each examples/ manifest applied with kubectl to the real control plane; the
operator renders and applies the children; the pod runner runs the pods as processes exactly as their
specs say; the stock `mlflow` client does the seed tutorial through the TrackingServer's status.url
(the Ingress through NGINX when the example has one, else the Service).

Examples are changed only to point at this machine: the runner node (nodeSelector/tolerations), the
test PostgreSQL and MinIO (Secrets, S3 endpoint, bucket), TLS Secrets from the test CA. Where a test
changes more, the test says so.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import requests

from tests.operator_fixtures import get_json, wait_for

from .conftest import E2E, RECHECK, last_json, tutorial_env
from .podrunner import loopback_of
from .server_env import TUTORIAL

pytestmark = pytest.mark.timeout(1200)


def tutorial(e2e: E2E, url: str, **env: str) -> dict:
    return e2e.timed("tutorial", lambda: last_json(e2e.client(TUTORIAL, tutorial_env(url, **env)).stdout))


def recheck(e2e: E2E, url: str, run_id: str, **env: str) -> dict:
    return e2e.timed("recheck", lambda: last_json(
        e2e.client(RECHECK, {"MLFLOW_TRACKING_URI": url, "RUN_ID": run_id, **env}).stdout))


def ready(e2e: E2E, name: str, **more: str) -> dict:
    return e2e.timed("ready", lambda: e2e.wait_ready(name, **more))


def volume_dir(e2e: E2E, claim: str) -> Path:
    pvc = get_json(e2e.cluster, "pvc", claim, "-n", e2e.namespace)
    pv = get_json(e2e.cluster, "pv", pvc["spec"]["volumeName"])
    return Path(pv["spec"]["hostPath"]["path"])


def restart_pod(e2e: E2E, instance: str) -> None:
    """Delete the (single) server pod; wait for its replacement to be Ready."""
    old = e2e.ready_pods(instance)
    assert len(old) == 1, [p["metadata"]["name"] for p in old]
    e2e.kubectl("delete", "pod", old[0]["metadata"]["name"], "-n", e2e.namespace, "--wait=false")
    wait_for("a new Ready server pod", lambda: [p for p in e2e.ready_pods(instance)
                                                if p["metadata"]["uid"] != old[0]["metadata"]["uid"]],
             timeout=300, interval=1, explain=e2e.explain)


# ---- 1-3: embedded stores, local artifacts ----------------------------------------------------------

def test_scenario1_file_store_on_the_volume(e2e):
    ts = e2e.example("01-file-store.yaml")
    e2e.apply(ts)
    live = ready(e2e, "legacy-mlruns")
    url = live["status"]["url"]
    assert url == f"http://legacy-mlruns.{e2e.namespace}.svc:5000"
    out = tutorial(e2e, url)
    data = volume_dir(e2e, "legacy-mlruns-data")
    assert (data / "mlruns").is_dir() and any((data / "mlruns").rglob("meta.yaml")), "metadata not on the volume"
    assert any((data / "artifacts").rglob("MLmodel")), "the model is not on the volume"
    assert out["artifact_uri"].startswith("mlflow-artifacts:/")


def test_scenario2_sqlite_quickstart_survives_a_pod_restart(e2e):
    ts = e2e.example("02-sqlite.yaml")
    e2e.apply(ts)
    live = ready(e2e, "quickstart", MigrationsApplied="True")
    url = live["status"]["url"]
    assert url == f"http://quickstart.{e2e.namespace}.svc:5000", url
    out = tutorial(e2e, url)
    data = volume_dir(e2e, "quickstart-data")
    assert (data / "mlflow.db").is_file(), sorted(p.name for p in data.iterdir())
    assert any((data / "artifacts").rglob("MLmodel")), "the model is not on the volume"

    e2e.timed("pod restart", lambda: restart_pod(e2e, "quickstart"))  # the new pod mounts the same claim
    e2e.wait_ready("quickstart")
    recheck(e2e, url, out["run_id"])


# ---- 4: PostgreSQL + S3, clients write artifacts directly ---------------------------------------------

def test_scenario4_postgres_and_s3_direct(e2e):
    ts = e2e.example("04-remote-direct.yaml")
    bucket = e2e.bucket("acme-ml-artifacts")
    ts["spec"]["artifacts"]["s3"]["endpointUrl"] = e2e.s3.endpoint  # MinIO instead of AWS
    ts["spec"]["artifacts"]["s3"]["region"] = e2e.s3.region
    e2e.secret("forecast-db", {"uri": e2e.database("forecast")})
    e2e.s3_secret("forecast-s3")
    e2e.apply(ts)
    live = ready(e2e, "forecast", MigrationsApplied="True", BackendReachable="True")
    e2e.wait_pods("forecast", 2)
    url = live["status"]["url"]
    # the client holds its own S3 credentials and writes to the bucket itself
    out = tutorial(e2e, url, **e2e.s3.env())
    assert out["artifact_uri"].startswith(f"s3://{bucket}/forecast/"), out
    # the run's own artifacts under its run, the model (an MLflow 3 LoggedModel) under the experiment's models/
    keys = e2e.s3_keys(bucket, f"forecast/{out['experiment_id']}/")
    assert any(k.endswith(f"{out['run_id']}/artifacts/notes/notes.txt") for k in keys), keys
    assert any("/models/" in k and k.endswith("MLmodel") for k in keys), keys
    recheck(e2e, url, out["run_id"], **e2e.s3.env())
    # each replica answers for the same data, at its pod IP (accepted as a Host: the entrypoint allows MLFLOW_OPERATOR_POD_IPS)
    for pod in e2e.ready_pods("forecast"):
        assert_pod_serves_run(pod, out["run_id"])


def assert_pod_serves_run(pod: dict, run_id: str) -> None:
    ip = pod["status"]["podIP"]
    resp = requests.get(f"http://{loopback_of(ip)}:5000/api/2.0/mlflow/runs/get", params={"run_id": run_id},
                        headers={"Host": f"{ip}:5000"}, timeout=30)
    assert resp.status_code == 200 and resp.json()["run"]["info"]["run_id"] == run_id, (pod["metadata"]["name"], resp.text[:300])


# ---- 6: an artifacts-only server ---------------------------------------------------------------------

ARTIFACT_ROUND_TRIP = r"""
import json, os, tempfile
import requests
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

repo = get_artifact_repository(os.environ["ART_URI"])
payload = os.urandom(3 * 1024 * 1024)
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "data.bin")
    open(path, "wb").write(payload)
    repo.log_artifact(path, artifact_path="sub")
    listed = [f.path for f in repo.list_artifacts("sub")]
    assert listed == ["sub/data.bin"], listed
    os.makedirs(os.path.join(d, "dl"))
    out = repo.download_artifacts("sub/data.bin", dst_path=os.path.join(d, "dl"))
    assert open(out, "rb").read() == payload, "downloaded bytes differ"
tracking = requests.get(os.environ["SERVER"] + "/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                        timeout=60)
print(json.dumps({"listed": listed, "tracking_status": tracking.status_code, "tracking_body": tracking.text[:300]}))
"""


def test_scenario6_artifacts_only_server(e2e):
    """06-artifacts-only.yaml stores in GCS, which this machine cannot reach: the same spec with the
    store switched to MinIO (S3) is the only change beyond the common ones."""
    ts = e2e.example("06-artifacts-only.yaml")
    bucket = e2e.bucket("acme-ml-shared-artifacts")
    artifacts = ts["spec"]["artifacts"]
    artifacts.pop("gcs")
    artifacts["destination"] = f"s3://{bucket}/mlflow"
    artifacts["s3"] = {"endpointUrl": e2e.s3.endpoint, "region": e2e.s3.region,
                       "accessKeyId": {"secretKeyRef": {"name": "shared-s3", "key": "access-key-id"}},
                       "secretAccessKey": {"secretKeyRef": {"name": "shared-s3", "key": "secret-access-key"}}}
    e2e.s3_secret("shared-s3")
    e2e.apply(ts)
    live = ready(e2e, "gcs-artifacts", MigrationsApplied="True")
    e2e.wait_pods("gcs-artifacts", 2)
    server = live["status"]["url"]
    host = server.split("://", 1)[1]
    prefix = "team-" + uuid.uuid4().hex[:6]
    # MLflow's client wants an http(s) tracking URI before it resolves mlflow-artifacts:// URIs
    out = last_json(e2e.client(ARTIFACT_ROUND_TRIP, {"ART_URI": f"mlflow-artifacts://{host}/{prefix}",
                                                     "SERVER": server, "MLFLOW_TRACKING_URI": server}).stdout)
    assert f"mlflow/{prefix}/sub/data.bin" in e2e.s3_keys(bucket, f"mlflow/{prefix}/")
    assert out["tracking_status"] >= 400 and "artifacts-only" in out["tracking_body"], out
    # the pods hold the storage credentials; nothing else in the namespace needs them
    for pod in e2e.ready_pods("gcs-artifacts"):
        env = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env
