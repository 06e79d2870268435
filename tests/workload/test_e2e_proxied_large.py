"""Scenario 5 end to end: proxied artifacts in S3; clients hold no storage credentials; a 200 MB artifact
crosses NGINX (configured from the rendered Ingress) both ways byte-identical; the upload limit from the
spec is NGINX's, and a larger upload is refused with 413.
"""
from __future__ import annotations

import pytest

from tests.operator_fixtures import get_json, wait_for

from .conftest import last_json, tutorial_env
from .server_env import TUTORIAL

pytestmark = pytest.mark.timeout(1500)

HOST = "mlflow.nlp.example.com"
SIZE = 200 * 1024 * 1024

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

TOO_LARGE = r"""
import json, os, tempfile
import mlflow

mlflow.set_experiment("large-artifacts")
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "big.bin")
    with open(path, "wb") as fh:
        fh.truncate(int(os.environ["SIZE"]))
    with mlflow.start_run() as run:
        try:
            mlflow.log_artifact(path, artifact_path="too-large")
            outcome = "stored"
        except Exception as exc:  # what the user sees
            outcome = f"{type(exc).__name__}: {exc}"
print(json.dumps({"run_id": run.info.run_id, "outcome": outcome[:2000]}))
"""


def test_scenario5_proxied_s3_200mb_through_nginx_and_upload_limit(e2e):
    """05-proxied.yaml, plus an Ingress host (the example has none: the 200 MB must cross NGINX), with the
    S3 endpoint pointed at MinIO. The example's ServiceMonitor needs its CRD, installed first."""
    e2e.cluster.install_servicemonitor_crd()
    ts = e2e.example("05-proxied.yaml")
    bucket = e2e.bucket("mlflow-nlp")
    ts["spec"]["artifacts"]["s3"]["endpointUrl"] = e2e.s3.endpoint
    ts["spec"]["ingress"] = {"className": "nginx", "hosts": [HOST]}
    e2e.secret("nlp-db", {"uri": e2e.database("nlp")})
    e2e.s3_secret("nlp-object-store")
    e2e.apply(ts)
    live = e2e.timed("ready", lambda: e2e.wait_ready("nlp", MigrationsApplied="True", ArtifactStoreReachable="True"))
    e2e.wait_pods("nlp", 3)
    url = live["status"]["url"]
    assert url == f"http://{HOST}", url

    # the tutorial with no storage credentials in the client: artifacts go through the server
    out = e2e.timed("tutorial", lambda: last_json(e2e.client(TUTORIAL, tutorial_env(url)).stdout))
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out
    keys = e2e.s3_keys(bucket, "artifacts/")
    assert any(k.endswith("MLmodel") for k in keys) and any(k.endswith("notes/notes.txt") for k in keys), keys

    # 200 MB up and down through NGINX, byte-identical, stored in S3 whole
    big = e2e.timed("200 MB round trip", lambda: last_json(e2e.client(LARGE, {"MLFLOW_TRACKING_URI": url,
                                                                              "SIZE": str(SIZE)}).stdout))
    assert big["bytes"] == SIZE and big["sent"] == big["received"], big
    objects = [o for o in e2e.s3.client().list_objects_v2(Bucket=bucket, Prefix="artifacts/").get("Contents", [])
               if o["Key"].endswith("large/big.bin") and big["run_id"] in o["Key"]]
    assert len(objects) == 1 and objects[0]["Size"] == SIZE, objects
    puts = [line for line in e2e.ingress.access_lines() if f"host={HOST}" in line and "PUT /api/2.0/mlflow-artifacts/" in line
            and "big.bin" in line]
    assert puts and "status=200" in puts[-1] and "upstream=127.200." in puts[-1], puts[-3:]
    assert int(puts[-1].split("request_length=")[1].split()[0]) > SIZE, puts[-1]
    print(f"200 MB through NGINX: upload {big['upload_s']} s, download {big['download_s']} s")

    # The upload limit is the spec's: lower it, NGINX refuses a larger artifact with 413 and stores nothing
    e2e.patch("nlp", {"spec": {"http": {"maxUploadSize": "50Mi"}}})
    wait_for("the Ingress to carry the new body size",
             lambda: (get_json(e2e.cluster, "ingress", "nlp", "-n", e2e.namespace)["metadata"]["annotations"]
                      .get("nginx.ingress.kubernetes.io/proxy-body-size") == "50m"), timeout=120, explain=e2e.explain)
    wait_for("NGINX to load the new limit", lambda: "client_max_body_size 50m;" in e2e.ingress.conf.read_text(), timeout=60)
    refused = last_json(e2e.client(TOO_LARGE, {"MLFLOW_TRACKING_URI": url, "SIZE": str(60 * 1024 * 1024)}).stdout)
    assert "413" in refused["outcome"], refused
    assert not [k for k in e2e.s3_keys(bucket, "artifacts/") if refused["run_id"] in k and "too-large" in k]
    e2e.wait_ready("nlp")
