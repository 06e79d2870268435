"""Scenario 5 with large artifacts on real pods, through the real ingress controller.

05-proxied.yaml (PostgreSQL, artifacts proxied to S3: MinIO here), plus an Ingress host (the
example has none: the artifacts must cross the controller), with one replica instead of three: the
example's three Ready replicas, budget and metrics are test_examples_on_real_pods.py's; here the
sizes matter, and a rollout of one pod after the limit changes costs a third. Clients hold no
storage credentials and name the server by its host name, outside the cluster.

- The seed tutorial, then a 200 MB artifact of random bytes up and down through Traefik,
  byte-identical, stored whole in S3; Traefik's access log shows a server pod took the upload.
- An artifact exactly as large as the default `maxUploadSize` (5Gi), with the server pod at its
  default memory limit (2Gi): stored whole, no OOM kill, no restart. The serving container's peak
  memory is read from its memory cgroup on the node (what the limit is enforced on: resident
  memory and page cache of the staging file) and its resident memory sampled apart; the figures
  go to test-artifacts/node/upload-memory.json and the README.
- The upload limit is the spec's: lowered to 50Mi, the Ingress carries it and the pods roll; a
  60 MiB artifact is refused with 413 (the server's: Traefik applies `proxy-body-size` only when
  it buffers, and as rendered it streams) and nothing of it is in the store.
"""
from __future__ import annotations

import json
import time

import pytest

from testservices import REPO
from tests.operator_fixtures import get_json, wait_for
from tests.workload.server_env import last_json, tutorial_env
from tests.workload.server_env import TUTORIAL

from .container_memory import ContainerMemory, mib
from .ingress_client import backend_ip, client_script, pod_ips, served, wait_routed

pytestmark = [pytest.mark.node, pytest.mark.timeout(2700)]

HOST = "mlflow.nlp.example.com"
SIZE = 200 * 1024 * 1024
GiB = 1 << 30
ARTIFACTS_DIR = REPO / "test-artifacts" / "node"

# Writes a 200 MB file of random bytes, logs it through the server, downloads it back, compares digests.
LARGE = r"""
import hashlib, json, os, tempfile, time
import mlflow

size = int(os.environ["SIZE"])
mlflow.set_experiment("large-artifacts")
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "big.bin")
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 << 20))
            digest.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    with mlflow.start_run() as run:
        t0 = time.monotonic()
        mlflow.log_artifact(path, artifact_path="large")
        up = time.monotonic() - t0
    t0 = time.monotonic()
    os.makedirs(os.path.join(d, "dl"))
    local = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/large/big.bin", dst_path=os.path.join(d, "dl"))
    down = time.monotonic() - t0
    back = hashlib.sha256()
    with open(local, "rb") as fh:
        for chunk in iter(lambda: fh.read(8 << 20), b""):
            back.update(chunk)
    print(json.dumps({"run_id": run.info.run_id, "artifact_uri": run.info.artifact_uri, "sent": digest.hexdigest(),
                      "received": back.hexdigest(), "bytes": os.path.getsize(local), "upload_s": round(up, 1),
                      "download_s": round(down, 1)}))
"""

# A sparse file of SIZE bytes (zeros: what the server holds in memory does not depend on the
# bytes), logged through the server; "stored" or what the user sees.
SIZED = r"""
import json, os, tempfile, time
import mlflow

mlflow.set_experiment("large-artifacts")
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, os.environ["NAME"])
    with open(path, "wb") as fh:
        fh.truncate(int(os.environ["SIZE"]))
    with mlflow.start_run() as run:
        t0 = time.monotonic()
        try:
            mlflow.log_artifact(path, artifact_path=os.environ["ARTIFACT_PATH"])
            outcome = "stored"
        except Exception as exc:  # what the user sees
            outcome = f"{type(exc).__name__}: {exc}"
        seconds = time.monotonic() - t0
print(json.dumps({"run_id": run.info.run_id, "outcome": outcome[:2000], "seconds": round(seconds, 1)}))
"""


def _objects(real, bucket: str, run_id: str, suffix: str) -> list[dict]:
    pages = real.s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="artifacts/")
    return [o for page in pages for o in page.get("Contents", []) if run_id in o["Key"] and o["Key"].endswith(suffix)]


def _byte_size(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def test_scenario5_large_artifacts_through_the_controller_memory_and_the_upload_limit(real, node_ingress):
    ts = real.example("05-proxied.yaml")
    bucket = real.bucket("mlflow-nlp")
    ts["spec"]["artifacts"]["s3"]["endpointUrl"] = real.s3_endpoint()
    ts["spec"]["ingress"] = {"className": node_ingress.ingress_class, "hosts": [HOST]}
    ts["spec"]["replicas"] = 1
    real.secret("nlp-db", {"uri": real.database("nlp")})
    real.s3_secret("nlp-object-store")
    real.apply(ts)
    live = real.timed("ready", lambda: real.wait_ready("nlp", timeout=900, MigrationsApplied="True",
                                                       ArtifactStoreReachable="True"))
    real.wait_pods("nlp", 1)
    url = live["status"]["url"]
    assert url == f"http://{HOST}", url
    real.timed("routed", lambda: wait_routed(node_ingress, HOST))

    def client(script: str, env: dict[str, str], **kw):
        return real.client(client_script(node_ingress, script, hosts=(HOST,)), env, **kw)

    # the tutorial with no storage credentials in the client: artifacts go through the server
    out = real.timed("tutorial", lambda: last_json(client(TUTORIAL, tutorial_env(url)).stdout))
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out
    keys = real.s3_keys(bucket, "artifacts/")
    assert any(k.endswith("MLmodel") for k in keys) and any(k.endswith("notes/notes.txt") for k in keys), keys

    # 200 MB up and down through the controller, byte-identical, stored in S3 whole
    big = real.timed("200 MB round trip", lambda: last_json(client(LARGE, {"MLFLOW_TRACKING_URI": url,
                                                                           "SIZE": str(SIZE)}).stdout))
    assert big["bytes"] == SIZE and big["sent"] == big["received"], big
    objects = _objects(real, bucket, big["run_id"], "large/big.bin")
    assert len(objects) == 1 and objects[0]["Size"] == SIZE, objects
    ips = pod_ips(real, "nlp", "tracking")
    puts = [e for e in served(node_ingress, HOST, "/api/2.0/mlflow-artifacts/", "PUT")
            if "big.bin" in e["RequestPath"]]
    assert puts and puts[-1]["OriginStatus"] == 200 and backend_ip(puts[-1]) in ips, (puts[-3:], ips)
    assert puts[-1]["RequestContentSize"] >= SIZE, puts[-1]
    print(f"200 MB through Traefik: upload {big['upload_s']} s, download {big['download_s']} s")

    # As large as the default limit, at the default memory limit
    spec_http = real.get("nlp")["spec"]["http"]
    assert spec_http["maxUploadSize"] == "5Gi", spec_http
    full = _byte_size(spec_http["maxUploadSize"])
    pods = real.ready_pods("nlp")
    memory = {p["metadata"]["name"]: ContainerMemory.of(real.cluster, p, "mlflow") for p in pods}
    for pod, cg in memory.items():
        assert cg.limit() == 2 * GiB, (pod, cg.limit())  # the operator's default limit (DEFAULT_RESOURCES)
        cg.reset_peak()
        cg.start_sampling()
    try:
        stored = real.timed("5 GiB upload", lambda: last_json(client(SIZED, {
            "MLFLOW_TRACKING_URI": url, "SIZE": str(full), "NAME": "limit.bin", "ARTIFACT_PATH": "at-limit",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "900"}, timeout=2400).stdout))
    finally:
        for cg in memory.values():
            cg.stop_sampling()
    assert stored["outcome"] == "stored", stored
    [put] = [e for e in served(node_ingress, HOST, "/api/2.0/mlflow-artifacts/", "PUT") if "limit.bin" in e["RequestPath"]]
    serving = next(p["metadata"]["name"] for p in pods if p["status"]["podIP"] == backend_ip(put))
    assert put["OriginStatus"] == 200 and put["RequestContentSize"] == full, put
    objects = _objects(real, bucket, stored["run_id"], "at-limit/limit.bin")
    assert len(objects) == 1 and objects[0]["Size"] == full, objects
    real.s3.client().delete_object(Bucket=bucket, Key=objects[0]["Key"])  # 5 GiB of MinIO's disk back
    figures = {name: {"peak_mib": mib(cg.peak()), "rss_peak_mib": mib(cg.rss_peak), "samples": cg.samples,
                      "oom_kills": cg.oom_kills(), "limit_mib": mib(cg.limit())} for name, cg in memory.items()}
    for pod in real.pods("app.kubernetes.io/instance=nlp,app.kubernetes.io/component=tracking"):
        status = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "mlflow")
        assert status["restartCount"] == 0 and "terminated" not in (status.get("lastState") or {}), status
    assert all(f["oom_kills"] == 0 for f in figures.values()), figures
    assert figures[serving]["samples"] > 0, figures
    report = {"bytes": full, "upload_s": stored["seconds"], "serving_pod": serving, "pods": figures,
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS_DIR / "upload-memory.json").write_text(json.dumps(report, indent=1) + "\n")
    print("5 GiB upload at the default memory limit: " + json.dumps(report))

    # The upload limit is the spec's: lower it, the server refuses a larger artifact with 413 and stores nothing
    real.kubectl("patch", "trackingserver", "nlp", "-n", real.namespace, "--type=merge",
                 "-p", json.dumps({"spec": {"http": {"maxUploadSize": "50Mi"}}}))
    wait_for("the Ingress to carry the new body size",
             lambda: (get_json(real.cluster, "ingress", "nlp", "-n", real.namespace)["metadata"]["annotations"]
                      .get("nginx.ingress.kubernetes.io/proxy-body-size") == "50m"), timeout=120, explain=real.explain)
    real.timed("rolled", lambda: real.kubectl("rollout", "status", "deployment/nlp", "-n", real.namespace,
                                              "--timeout=900s", timeout=960))
    real.wait_ready("nlp", timeout=300)
    wait_routed(node_ingress, HOST)
    refused = last_json(client(SIZED, {"MLFLOW_TRACKING_URI": url, "SIZE": str(60 * 1024 * 1024), "NAME": "big.bin",
                                       "ARTIFACT_PATH": "too-large", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}).stdout)
    assert "413" in refused["outcome"], refused
    assert not [k for k in real.s3_keys(bucket, "artifacts/") if refused["run_id"] in k and "too-large" in k]
    [put] = [e for e in served(node_ingress, HOST, "/api/2.0/mlflow-artifacts/", "PUT")
             if refused["run_id"] in e["RequestPath"] and "too-large" in e["RequestPath"]]
    assert put["OriginStatus"] == 413 and backend_ip(put) in pod_ips(real, "nlp", "tracking"), put
