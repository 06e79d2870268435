"""A 200 MB artifact goes up and comes back byte-identical through NGINX and the proxying server to S3."""
from __future__ import annotations

import uuid

import pytest

from .server_env import O, proxied

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SIZE_MB = 200

SCRIPT = r"""
import hashlib, os, mlflow
size = int(os.environ["SIZE_MB"]) * 1024 * 1024
path = os.path.join(os.getcwd(), "big.bin")
digest = hashlib.sha256()
with open(path, "wb") as fh:  # generated in 8 MiB chunks: never 200 MB in memory
    left = size
    while left:
        chunk = os.urandom(min(left, 8 * 1024 * 1024))
        digest.update(chunk)
        fh.write(chunk)
        left -= len(chunk)
mlflow.set_experiment("large-" + os.environ["SUFFIX"])
with mlflow.start_run() as run:
    mlflow.log_artifact(path, artifact_path="big")
os.remove(path)
out = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/big/big.bin", dst_path=os.path.join(os.getcwd(), "dl"))
back = hashlib.sha256()
with open(out, "rb") as fh:
    for chunk in iter(lambda: fh.read(8 * 1024 * 1024), b""):
        back.update(chunk)
assert os.path.getsize(out) == size, os.path.getsize(out)
assert back.hexdigest() == digest.hexdigest(), "downloaded bytes differ from the uploaded ones"
print(digest.hexdigest())
"""


def test_200mb_artifact_through_nginx_is_byte_identical(mlflow_server, nginx, client, migrated_pg_uri, s3):
    bucket = s3.create_bucket("large-" + uuid.uuid4().hex[:8])
    srv = mlflow_server(proxied(migrated_pg_uri, f"s3://{bucket}/artifacts", **s3.env(),
                                **{O + "KEEP_ALIVE_TIMEOUT": "120"}))
    proxy = nginx(srv.port, client_max_body_size="0", timeout_seconds=600)
    res = client(SCRIPT, {"MLFLOW_TRACKING_URI": proxy.url, "SIZE_MB": str(SIZE_MB), "SUFFIX": uuid.uuid4().hex[:6],
                          "MLFLOW_HTTP_REQUEST_TIMEOUT": "600"}, timeout=800)
    assert len(res.stdout.strip().splitlines()[-1]) == 64
    objects = s3.client().list_objects_v2(Bucket=bucket)["Contents"]
    big = [o for o in objects if o["Key"].endswith("big/big.bin")]
    assert big and big[0]["Size"] == SIZE_MB * 1024 * 1024, objects
