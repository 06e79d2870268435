"""spec.http.maxUploadSize enforced by the server itself (MLFLOW_OPERATOR_MAX_UPLOAD_SIZE), for a
client that talks to it directly (an HTTPRoute, a LoadBalancer, a pod in the cluster: no NGINX in
between): a body over the limit gets 413 and leaves nothing in the artifact store or the database,
with or without Content-Length; a body at the limit goes through; 0 means unlimited."""
from __future__ import annotations

import http.client
import json
import uuid

import pytest
import requests

from testservices.mlflowproc import start_entrypoint

from .server_env import O, proxied

pytestmark = pytest.mark.timeout(600)

LIMIT = 1024 * 1024  # 1Mi
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def limited(server_venv, postgres, _migrated_template, tmp_path_factory):
    work = tmp_path_factory.mktemp("limited")
    env = proxied(postgres.create_database(template=_migrated_template), str(work / "artifacts"),
                  **{O + "MAX_UPLOAD_SIZE": "1Mi"})
    srv = start_entrypoint(server_venv, env, work / "server")
    srv.store = work / "artifacts"
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def run_id(limited):
    r = requests.post(limited.url + "/api/2.0/mlflow/runs/create", json={"experiment_id": "0"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["run"]["info"]["run_id"]


def send(port: int, method: str, path: str, body: bytes, *, chunked: bool = False, headers: dict | None = None,
         conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    """The whole body is sent before the answer is read, as most clients do."""
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = dict(headers or {})
    if chunked:
        pieces = (body[i:i + CHUNK] for i in range(0, len(body), CHUNK))
        conn.request(method, path, body=pieces, headers={**headers, "Transfer-Encoding": "chunked"},
                     encode_chunked=True)
    else:
        conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def stored_files(store) -> dict[str, int]:
    """Every file in the artifact store, hidden staging files included, with its size."""
    if not store.exists():
        return {}
    return {str(p.relative_to(store)): p.stat().st_size for p in store.rglob("*") if p.is_file()}


def artifact_path(name: str) -> str:
    return f"/api/2.0/mlflow-artifacts/artifacts/limit-{uuid.uuid4().hex[:8]}/{name}"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_over_the_limit_gets_413_and_stores_nothing(limited, chunked):
    before = stored_files(limited.store)
    path = artifact_path("too-big.bin")
    status, body = send(limited.port, "PUT", path, b"x" * (LIMIT + 1), chunked=chunked)
    assert status == 413, body[:300]
    assert json.loads(body)["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert str(LIMIT) in json.loads(body)["message"]
    assert stored_files(limited.store) == before, "an over-limit upload left something in the store"
    assert requests.get(limited.url + path, timeout=30).status_code == 404


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_at_the_limit_is_stored_whole(limited, chunked):
    path = artifact_path("exact.bin")
    payload = bytes(range(256)) * (LIMIT // 256)
    assert len(payload) == LIMIT
    status, body = send(limited.port, "PUT", path, payload, chunked=chunked)
    assert status == 200, body[:300]
    back = requests.get(limited.url + path, timeout=30)
    assert back.status_code == 200 and back.content == payload


def test_the_flask_api_is_limited_too_and_nothing_is_logged(limited, run_id):
    metrics = [{"key": f"m{i}", "value": 1.0, "timestamp": 1_700_000_000_000, "step": i} for i in range(20000)]
    body = json.dumps({"run_id": run_id, "metrics": metrics}).encode()
    assert len(body) > LIMIT
    for chunked in (False, True):
        status, answer = send(limited.port, "POST", "/api/2.0/mlflow/runs/log-batch", body, chunked=chunked,
                              headers={"Content-Type": "application/json"})
        assert status == 413, (chunked, answer[:300])
    run = requests.get(limited.url + "/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=30).json()
    assert run["run"]["data"].get("metrics", []) == [], "an over-limit log-batch was partly applied"
    # the Flask-served upload route (the UI's) as well
    before = stored_files(limited.store)
    status, _ = send(limited.port, "POST", f"/ajax-api/2.0/mlflow/upload-artifact?run_uuid={run_id}&path=big.bin",
                     b"y" * (LIMIT + CHUNK), chunked=True)
    assert status == 413
    assert stored_files(limited.store) == before


def test_the_connection_survives_a_refusal(limited):
    """The rest of a refused body is read and dropped: the client gets its 413, not a reset, and the
    same keep-alive connection serves the next request."""
    conn = http.client.HTTPConnection("127.0.0.1", limited.port, timeout=60)
    try:
        status, _ = send(limited.port, "PUT", artifact_path("big.bin"), b"z" * (4 * LIMIT), conn=conn)
        assert status == 413
        status, body = send(limited.port, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", b"", conn=conn)
        assert status == 200, body[:300]
    finally:
        conn.close()


def test_zero_means_unlimited(server_venv, postgres, _migrated_template, tmp_path):
    env = proxied(postgres.create_database(template=_migrated_template), str(tmp_path / "artifacts"),
                  **{O + "MAX_UPLOAD_SIZE": "0", O + "WORKERS": "1"})
    srv = start_entrypoint(server_venv, env, tmp_path / "server")
    try:
        payload = b"u" * (8 * LIMIT)
        for chunked in (False, True):
            path = artifact_path(f"large-{chunked}.bin")
            status, body = send(srv.port, "PUT", path, payload, chunked=chunked)
            assert status == 200, body[:300]
            assert len(requests.get(srv.url + path, timeout=60).content) == len(payload)
    finally:
        srv.stop()


STOCK_CLIENT = r"""
import os, mlflow
with open("big.bin", "wb") as fh:
    fh.write(os.urandom(int(os.environ["SIZE"])))
with open("small.txt", "w") as fh:
    fh.write("within the limit")
with mlflow.start_run() as run:
    mlflow.log_artifact("small.txt")
    try:
        mlflow.log_artifact("big.bin")
    except Exception as exc:
        print("REFUSED", type(exc).__name__, str(exc)[:500].replace("\n", " "))
    else:
        print("STORED")
print("RUN", run.info.run_id)
"""


def test_the_stock_client_is_told_why(limited, client):
    """mlflow.log_artifact over the limit fails at once with the server's reason (no retries: 413
    is not a status MLflow's client retries), and the run keeps what was within the limit."""
    before = stored_files(limited.store)
    res = client(STOCK_CLIENT, {"MLFLOW_TRACKING_URI": limited.url, "SIZE": str(2 * LIMIT)}, timeout=300)
    lines = res.stdout.strip().splitlines()
    refused = next(line for line in lines if line.startswith(("REFUSED", "STORED")))
    assert refused.startswith("REFUSED") and "413" in refused, res.stdout + res.stderr[-2000:]
    after = stored_files(limited.store)
    added = {k: v for k, v in after.items() if k not in before}
    assert [k.rsplit("/", 1)[-1] for k in added] == ["small.txt"], added
