"""Scenario 6, split mode, end to end (07-split.yaml): one client-facing HTTPS host; NGINX sends MLflow's
artifact API to the artifacts-only pods and everything else to the metadata pods; the metadata pods hold
no storage credentials and reach artifacts through the artifacts Service (its cluster DNS name); the web
UI's artifact listing and download endpoints work.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import last_json, tutorial_env
from .podrunner import loopback_of
from .server_env import TUTORIAL

pytestmark = pytest.mark.timeout(1500)

HOST = "mlflow.recsys.example.com"

# What the web UI does to show a run's artifacts: list them (ajax artifact API, routed to the artifacts
# pods) and open one (get-artifact, served by a metadata pod, which fetches it from the artifacts Service).
UI_ENDPOINTS = r"""
import json, os
import requests

base, run_id, exp = os.environ["MLFLOW_TRACKING_URI"], os.environ["RUN_ID"], os.environ["EXPERIMENT_ID"]
listing = requests.get(f"{base}/ajax-api/2.0/mlflow-artifacts/artifacts",
                       params={"path": f"{exp}/{run_id}/artifacts/notes"}, timeout=60)
listed = requests.get(f"{base}/ajax-api/2.0/mlflow/artifacts/list", params={"run_id": run_id, "path": "notes"},
                      timeout=60)
download = requests.get(f"{base}/get-artifact", params={"path": "notes/notes.txt", "run_uuid": run_id}, timeout=60)
print(json.dumps({"listing": [listing.status_code, listing.text[:500]], "listed": [listed.status_code, listed.text[:500]],
                  "download": [download.status_code, download.text[:200]]}))
"""


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_split_mode_one_host_two_kinds_of_pods(e2e):
    ts = e2e.example("07-split.yaml")
    bucket = e2e.bucket("acme-ml-recsys")
    s3 = ts["spec"]["artifacts"]["s3"]
    s3["endpointUrl"], s3["region"] = e2e.s3.endpoint, e2e.s3.region  # MinIO, not AWS eu-central-1
    e2e.secret("recsys-db", {"uri": e2e.database("recsys")})
    e2e.s3_secret("recsys-s3")
    e2e.tls_secret("mlflow-recsys-tls", [HOST])
    e2e.apply(ts)
    live = e2e.timed("ready", lambda: e2e.wait_ready("recsys", timeout=600, MigrationsApplied="True"))
    metadata, artifacts = e2e.wait_pods("recsys", 2, "tracking"), e2e.wait_pods("recsys", 3, "artifacts")
    url = live["status"]["url"]
    assert url == f"https://{HOST}", url

    out = e2e.timed("tutorial", lambda: last_json(e2e.client(TUTORIAL, tutorial_env(url)).stdout))
    keys = e2e.s3_keys(bucket, "mlflow/")
    assert any(k.endswith("MLmodel") for k in keys) and any(k.endswith("notes/notes.txt") for k in keys), keys

    # Only the artifacts pods hold storage settings: in their spec and in every process they run.
    for pod in metadata:
        names = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
        assert not {n for n in names if n.startswith(("AWS_", "MLFLOW_S3_"))}, (pod["metadata"]["name"], names)
        pids = e2e.pod_processes(pod)
        assert len(pids) >= 3, pids  # the server and its uvicorn workers
        for pid in pids:
            leaked = {k for k in _environ(pid) if k.startswith(("AWS_", "MLFLOW_S3_"))}
            assert not leaked, f"metadata pod {pod['metadata']['name']} process {pid} has {leaked}"
    assert all(any(e["name"] == "AWS_SECRET_ACCESS_KEY" for e in p["spec"]["containers"][0]["env"]) for p in artifacts)

    # NGINX routed by path: artifact uploads to the artifacts pods, the tracking API to the metadata pods
    meta_ips = {f"{loopback_of(p['status']['podIP'])}:5000" for p in metadata}
    art_ips = {f"{loopback_of(p['status']['podIP'])}:5000" for p in artifacts}
    lines = [line for line in e2e.ingress.access_lines() if f"host={HOST}" in line]
    uploads = [line for line in lines if "PUT /api/2.0/mlflow-artifacts/artifacts/" in line]
    creates = [line for line in lines if "POST /api/2.0/mlflow/runs/create" in line]
    assert uploads and all(line.split("upstream=")[1].split()[0] in art_ips for line in uploads), uploads[:3]
    assert creates and all(line.split("upstream=")[1].split()[0] in meta_ips for line in creates), creates[:3]

    # The UI's artifact endpoints
    ui = last_json(e2e.client(UI_ENDPOINTS, {"MLFLOW_TRACKING_URI": url, "RUN_ID": out["run_id"],
                                             "EXPERIMENT_ID": out["experiment_id"]}).stdout)
    assert ui["listing"][0] == 200 and "notes.txt" in ui["listing"][1], ui
    assert ui["listed"][0] == 200 and "notes/notes.txt" in ui["listed"][1], ui
    assert ui["download"] == [200, "hello from the tutorial\n"], ui
    # get-artifact was served by a metadata pod, which fetched the file from an artifacts pod (Service DNS)
    art_logs = e2e.runner.logs(e2e.namespace, "recsys-artifacts-", container="mlflow", lines=400)
    assert "GET /api/2.0/mlflow-artifacts/artifacts/" in art_logs and "notes/notes.txt" in art_logs
