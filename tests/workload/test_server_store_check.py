"""`mlflow-entrypoint check --init` (the server pods' init container) against real PostgreSQL, MariaDB
and MinIO: a real connection with a handshake per store, bounded retries, a result the operator
reads from the termination message (with the MLflow version that serves), and no password in it."""
from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from testservices.mlflowproc import _prepare

from .server_env import O, direct, proxied

REPORT = "mlflow-entrypoint check-report: "


def init_check(server_venv, env: dict, workdir, wait: str = "0") -> tuple[subprocess.CompletedProcess, str, dict]:
    message = workdir / "termination-log"
    message.write_text("")  # the kubelet mounts the file; the check never creates one
    full, _, _ = _prepare(server_venv, {O + "BACKEND_WAIT_SECONDS": wait, **env}, workdir, None)
    res = subprocess.run([str(server_venv.bin("mlflow-entrypoint")), "check", "--init", "--termination-message",
                          str(message)], env=full, cwd="/", capture_output=True, text=True, timeout=180)
    text = message.read_text() if message.exists() else ""
    line = next((l for l in text.splitlines() if l.startswith(REPORT)), None)
    assert line, f"no report in the termination message:\n{text}\n{res.stdout}\n{res.stderr}"
    return res, text, json.loads(line[len(REPORT):])


def installed_mlflow(server_venv) -> str:
    return subprocess.run([str(server_venv.python), "-c", "import mlflow; print(mlflow.__version__)"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_init_check_reports_reachable_stores_and_the_mlflow_version(server_venv, migrated_pg_uri, postgres, s3, tmp_path):
    bucket = s3.create_bucket("init-" + uuid.uuid4().hex[:8])
    res, text, report = init_check(server_venv, proxied(migrated_pg_uri, f"s3://{bucket}/mlflow", **s3.env()), tmp_path)
    assert res.returncode == 0 and report["ok"], text + res.stderr
    assert report["mlflowVersion"] == installed_mlflow(server_venv)
    db = report["databases"][0]
    assert db["reachable"] and db["reason"] == "Reachable" and db["schema"]["state"] == "current"
    assert report["artifacts"]["reachable"] and "answered a listing" in report["artifacts"]["message"]
    assert len(text.encode()) <= 4096 and text.startswith("mlflow-entrypoint check: ")
    assert postgres.password not in text + res.stdout + res.stderr and s3.secret_key not in text
    assert s3.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0, "the init check wrote to the bucket"


def test_init_check_fails_the_start_with_the_reason_and_retries_within_its_bound(server_venv, postgres, s3, tmp_path):
    host_unknown = postgres.create_database().replace(f"@{postgres.host}:{postgres.port}/", "@no-such-db.invalid:5432/")
    t0 = time.monotonic()
    res, text, report = init_check(server_venv, direct(host_unknown, "s3://b/x"), tmp_path, wait="3")
    took = time.monotonic() - t0
    assert res.returncode == 3 and not report["ok"]
    db = report["databases"][0]
    assert db["reason"] == "HostNotFound" and "no-such-db.invalid:5432" in db["message"], db
    assert db["attempts"] >= 2 and took < 60, (db, took)
    assert postgres.password not in text + res.stderr
    assert report["artifacts"] is None  # Direct: the server does not use the store

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    refused = postgres.create_database().replace(f"@{postgres.host}:{postgres.port}/", f"@127.0.0.1:{port}/")
    _, _, report = init_check(server_venv, direct(refused, "s3://b/x"), tmp_path)
    assert report["databases"][0]["reason"] == "ConnectionRefused", report

    wrong_password = postgres.create_database().replace(f":{postgres.password}@", ":not-the-password@")
    _, text, report = init_check(server_venv, direct(wrong_password, "s3://b/x"), tmp_path)
    assert report["databases"][0]["reason"] == "AuthenticationFailed", report
    assert "not-the-password" not in text

    missing_bucket = f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/x"
    res, text, report = init_check(server_venv, proxied(postgres.create_database(), missing_bucket, **s3.env()), tmp_path)
    assert res.returncode == 3 and report["databases"][0]["reachable"]
    assert report["artifacts"]["reason"] == "BucketNotFound", report["artifacts"]
    assert s3.secret_key not in text


def _mariadb_counters(mysql) -> dict[str, int]:
    rows = mysql.query("mysql", "SHOW GLOBAL STATUS WHERE Variable_name = 'Aborted_connects' "
                                "OR Variable_name LIKE 'Connection_errors_%'")
    return {name: int(value) for name, value in rows}


def test_init_check_completes_the_mariadb_handshake_every_time(server_venv, mysql, tmp_path):
    """MariaDB counts a connection that ends before the handshake (Aborted_connects, and against the
    source host's max_connect_errors, 100 by default): the check authenticates and closes cleanly."""
    uri = mysql.create_database()
    before = _mariadb_counters(mysql)
    for _ in range(3):
        res, text, report = init_check(server_venv, direct(uri, "s3://b/x"), tmp_path)
        assert res.returncode == 0 and report["databases"][0]["reachable"], text
        assert mysql.password not in text
    after = _mariadb_counters(mysql)
    assert after == before, {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    # The counters do see what a bare TCP probe does (what the operator used to be told not to do):
    with socket.create_connection((mysql.host, mysql.port), timeout=5):
        pass
    deadline = time.monotonic() + 10
    while _mariadb_counters(mysql)["Aborted_connects"] == after["Aborted_connects"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _mariadb_counters(mysql)["Aborted_connects"] == after["Aborted_connects"] + 1


def test_supported_models_answer_without_internet(mlflow_server, migrated_pg_uri, tmp_path):
    """MLflow's gateway asks a model catalog on the internet for its supported models by default and
    hangs where there is none; the image turns the remote fetch off unless the environment sets it."""
    srv = mlflow_server(proxied(migrated_pg_uri, str(tmp_path / "artifacts")))
    assert "MLFLOW_MODEL_CATALOG_URI" not in srv.env  # the operator sets nothing: the image's default
    environ = dict(item.split(b"=", 1) for item in Path(f"/proc/{srv.proc.pid}/environ").read_bytes().split(b"\0") if b"=" in item)
    assert environ.get(b"MLFLOW_MODEL_CATALOG_URI") == b"", "the server would fetch the model catalog from the internet"
    answer = requests.get(srv.url + "/ajax-api/3.0/mlflow/gateway/supported-models", params={"provider": "openai"},
                          timeout=60)
    assert answer.status_code == 200 and "models" in answer.json(), answer.text[:300]


def test_readiness_asks_the_database_and_recovers_with_it(mlflow_server, entrypoint, tmp_path):
    """/readyz (the pods' readiness probe) queries the tracking database: 503 while it is down (the log
    names it, never the password), 200 again when it is back; /health (startup, liveness) stays 200."""
    from testservices.postgres import Postgres

    from .server_env import StoppablePostgres

    pg = Postgres().start()  # this test stops its database: not the session's shared one
    try:
        uri = pg.create_database("ready")
        assert entrypoint("migrate", {O + "BACKEND_STORE_URI": uri}).returncode == 0
        srv = mlflow_server(proxied(uri, str(tmp_path / "artifacts")))
        ready = requests.get(srv.url + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        stoppable = StoppablePostgres(pg)
        stoppable.stop()
        down = requests.get(srv.url + "/readyz", timeout=30)
        assert down.status_code == 503 and "127.0.0.1" not in down.text, down.text  # no credentials asked: nothing told
        assert f"readiness: database postgresql 127.0.0.1:{pg.port}/ready" in srv.output(), srv.output()[-2000:]
        assert pg.password not in down.text + srv.output()
        assert requests.get(srv.url + "/health", timeout=10).status_code == 200
        stoppable.start()
        deadline = time.monotonic() + 60
        while requests.get(srv.url + "/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "/readyz did not recover with the database"
            time.sleep(1)
    finally:
        pg.stop()
