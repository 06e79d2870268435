"""MLflow's six tracking-server scenarios, each served by `mlflow-entrypoint serve` and exercised by the
stock `mlflow` client running the seed tutorial (autolog, RandomForestRegressor, diabetes data,
param/metric/artifact/model, download `runs:/<id>/model`, same predictions)."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import requests

from testservices._util import free_port, process_tree
from testservices.nginx import ARTIFACT_PREFIXES

from .server_env import O, TUTORIAL, artifacts_only, direct, last_json, proxied

pytestmark = pytest.mark.timeout(900)


def tutorial(client, url: str, extra_env: dict | None = None) -> dict:
    env = {"MLFLOW_TRACKING_URI": url, "EXPERIMENT": "tutorial-" + uuid.uuid4().hex[:6]}
    env.update(extra_env or {})
    return last_json(client(TUTORIAL, env).stdout)


def bucket_keys(s3, bucket: str) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def proc_environ(pid: int) -> dict:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_scenario1_file_store_on_a_volume(mlflow_server, entrypoint, client, tmp_path):
    volume = tmp_path / "data"
    volume.mkdir()
    env = proxied(f"file://{volume}/mlruns", str(volume / "artifacts"))
    # MLflow 3.18 refuses its file store unless told otherwise: the entrypoint says so up front
    refused = entrypoint("serve", env, timeout=60)
    assert refused.returncode == 2 and "MLFLOW_ALLOW_FILE_STORE=true" in refused.stderr, refused.stderr
    srv = mlflow_server({**env, "MLFLOW_ALLOW_FILE_STORE": "true"})
    out = tutorial(client, srv.url)
    assert out["artifact_uri"].startswith("mlflow-artifacts:/")
    assert (volume / "mlruns").is_dir()
    assert any((volume / "artifacts").rglob("MLmodel")), "the model did not land on the volume"


def test_scenario2_sqlite_on_a_volume(mlflow_server, entrypoint, client, tmp_path):
    volume = tmp_path / "data"
    volume.mkdir()
    uri = f"sqlite:///{volume}/mlflow.db"
    mig = entrypoint("migrate", {O + "BACKEND_STORE_URI": uri})
    assert mig.returncode == 0 and "(migrated)" in mig.stdout, mig.stdout + mig.stderr
    srv = mlflow_server(proxied(uri, str(volume / "artifacts")))
    tutorial(client, srv.url)
    assert any((volume / "artifacts").rglob("MLmodel"))
    # nothing written relative to the working directory: the server ran in its scratch dir
    assert not list(srv.scratch.glob("*.db")) and not (srv.scratch / "mlartifacts").exists()
    assert not Path("/mlflow.db").exists()


def test_scenario3_postgres_with_local_artifacts(mlflow_server, client, migrated_pg_uri, tmp_path):
    volume = tmp_path / "data"
    volume.mkdir()
    srv = mlflow_server(proxied(migrated_pg_uri, str(volume / "artifacts")))
    tutorial(client, srv.url)
    assert any((volume / "artifacts").rglob("model.pkl")) or any((volume / "artifacts").rglob("MLmodel"))


def test_scenario4_direct_s3_server_holds_no_storage_credentials(mlflow_server, client, migrated_pg_uri, s3):
    bucket = s3.create_bucket("direct-" + uuid.uuid4().hex[:8])
    srv = mlflow_server(direct(migrated_pg_uri, f"s3://{bucket}/mlflow"))
    assert "AWS_SECRET_ACCESS_KEY" not in proc_environ(srv.proc.pid)
    out = tutorial(client, srv.url, s3.env())  # the client holds the credentials
    assert out["artifact_uri"].startswith(f"s3://{bucket}/mlflow/")
    keys = bucket_keys(s3, bucket)
    assert any(k.endswith("MLmodel") for k in keys) and any(k.endswith("notes/notes.txt") for k in keys), keys


def test_scenario5_proxied_s3_client_holds_no_credentials(mlflow_server, client, migrated_pg_uri, s3):
    bucket = s3.create_bucket("proxied-" + uuid.uuid4().hex[:8])
    srv = mlflow_server(proxied(migrated_pg_uri, f"s3://{bucket}/artifacts", **s3.env()))
    out = tutorial(client, srv.url)  # no AWS_* in the client's environment
    assert out["artifact_uri"].startswith("mlflow-artifacts:/")
    keys = bucket_keys(s3, bucket)
    assert any(k.startswith("artifacts/") and k.endswith("MLmodel") for k in keys), keys


def test_scenario6_artifacts_only_server(mlflow_server, client, s3):
    bucket = s3.create_bucket("artonly-" + uuid.uuid4().hex[:8])
    srv = mlflow_server(artifacts_only(f"s3://{bucket}/store", **s3.env()))
    client(
        """
        import os, tempfile
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        repo = get_artifact_repository(os.environ["ART_URI"])
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "data.bin")
            open(p, "wb").write(b"x" * 100_000)
            repo.log_artifact(p, artifact_path="sub")
            assert [f.path for f in repo.list_artifacts("sub")] == ["sub/data.bin"]
            os.makedirs(d + "/dl")
            out = repo.download_artifacts("sub/data.bin", dst_path=d + "/dl")
            assert open(out, "rb").read() == b"x" * 100_000
        """,
        # the HTTP artifact repository: what clients and split-mode metadata servers use
        {"ART_URI": f"http://127.0.0.1:{srv.port}/api/2.0/mlflow-artifacts/artifacts/team-a"},
    )
    assert "store/team-a/sub/data.bin" in bucket_keys(s3, bucket)
    r = requests.get(srv.url + "/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=10)
    assert r.status_code >= 400 and "artifacts-only" in r.text, (r.status_code, r.text[:300])


def test_split_metadata_and_artifacts_servers_behind_nginx(mlflow_server, nginx, client, migrated_pg_uri, s3):
    """Scenario 6, split: only the artifacts server holds storage credentials; NGINX routes the artifact
    API paths to it; the metadata server reaches artifacts through it over HTTP."""
    bucket = s3.create_bucket("split-" + uuid.uuid4().hex[:8])
    art = mlflow_server(artifacts_only(f"s3://{bucket}/artifacts", **s3.env()), name="artifacts")
    meta = mlflow_server(
        proxied(migrated_pg_uri, f"http://127.0.0.1:{art.port}/api/2.0/mlflow-artifacts/artifacts"), name="metadata"
    )
    for pid in process_tree(meta.proc.pid):
        env = proc_environ(pid)
        assert not any(k.startswith(("AWS_", "MLFLOW_S3_")) for k in env), f"metadata process {pid} has storage settings"
    proxy = nginx(meta.port, {prefix: art.port for prefix in ARTIFACT_PREFIXES})

    out = tutorial(client, proxy.url)
    keys = bucket_keys(s3, bucket)
    assert any(k.endswith("MLmodel") for k in keys) and any(k.endswith("notes/notes.txt") for k in keys), keys

    # the artifact API went to the artifacts server (through NGINX), the rest to the metadata server
    art_log, meta_log = art.output(), meta.output()
    assert "PUT /api/2.0/mlflow-artifacts/artifacts/" in art_log
    assert "/api/2.0/mlflow/runs/create" in meta_log and "/api/2.0/mlflow/runs/create" not in art_log
    # the UI's ajax variant of the artifact API is routed the same way
    ajax = requests.get(
        proxy.url + "/ajax-api/2.0/mlflow-artifacts/artifacts",
        params={"path": f"{out['experiment_id']}/{out['run_id']}/artifacts/notes"}, timeout=30,
    )
    assert ajax.status_code == 200 and "notes.txt" in ajax.text, (ajax.status_code, ajax.text[:300])
    assert "GET /ajax-api/2.0/mlflow-artifacts/artifacts" in art.output()


def test_allowed_hosts_and_prometheus(mlflow_server, migrated_pg_uri, tmp_path):
    metrics_port = free_port()
    srv = mlflow_server(proxied(
        migrated_pg_uri, str(tmp_path / "artifacts"),
        **{O + "ALLOWED_HOSTS": "mlflow.team.svc:5000,mlflow.team.svc,127.0.0.1:*", O + "EXPOSE_PROMETHEUS": "true",
           O + "METRICS_PORT": str(metrics_port), O + "WORKERS": "2"},
    ))
    search = srv.url + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, headers={"Host": "mlflow.team.svc:5000"}, timeout=10).status_code == 200
    denied = requests.get(search, headers={"Host": "other.example"}, timeout=10)
    assert denied.status_code == 403
    # /health answers whatever the Host: a probe alone cannot catch a wrong allowed-hosts list
    assert requests.get(srv.url + "/health", headers={"Host": "other.example"}, timeout=10).status_code == 200
    # on their own port, whatever the Host (Prometheus scrapes the pod IP); see test_server_metrics.py
    metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", headers={"Host": "10.1.2.3:9090"}, timeout=10)
    assert metrics.status_code == 200 and "mlflow_http_request" in metrics.text, metrics.text[:500]
    assert requests.get(srv.url + "/metrics", timeout=10).status_code == 404
    assert (srv.scratch / "metrics").is_dir()


def test_check_reports_database_and_artifacts(entrypoint, migrated_pg_uri, pg_uri, s3):
    import json

    bucket = s3.create_bucket("check-" + uuid.uuid4().hex[:8])
    good = entrypoint("check", proxied(migrated_pg_uri, f"s3://{bucket}/a", **s3.env()))
    report = json.loads(good.stdout)
    assert good.returncode == 0 and report["ok"], good.stdout + good.stderr
    assert report["databases"][0]["schema"]["state"] == "current"
    assert report["artifacts"]["writable"] is True
    assert bucket_keys(s3, bucket) == [], "the check object was not deleted"

    bad = entrypoint("check", proxied(pg_uri, f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/a", **s3.env()))
    report = json.loads(bad.stdout)
    assert bad.returncode == 3 and not report["ok"]
    assert report["databases"][0]["reachable"] is True and report["databases"][0]["schema"]["state"] == "empty"
    assert report["artifacts"]["writable"] is False and "NoSuchBucket" in report["artifacts"]["error"]
    assert s3.secret_key not in bad.stdout + bad.stderr


def test_serve_becomes_uvicorn_and_stops_on_sigterm(mlflow_server, migrated_pg_uri, tmp_path):
    """The container's main process is uvicorn's supervisor (no MLflow CLI parent holding ~160 MB of
    imports), its workers are its children, and one SIGTERM to it alone (what the kubelet sends)
    ends the whole tree cleanly."""
    import os
    import signal

    srv = mlflow_server(proxied(migrated_pg_uri, str(tmp_path / "artifacts"), **{O + "WORKERS": "2"}))
    main_cmdline = Path(f"/proc/{srv.proc.pid}/cmdline").read_bytes().split(b"\0")
    # uvicorn's CLI, run by the image's launcher (which adds the metrics listener when asked)
    assert main_cmdline[1:3] == [b"-m", b"mlflow_entrypoint.launch"], main_cmdline
    assert b"mlflow" not in Path(main_cmdline[0].decode()).name.encode(), main_cmdline
    pids = process_tree(srv.proc.pid)
    cmdlines = {p: Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode() for p in pids}
    workers = [p for p, cmd in cmdlines.items() if "spawn_main" in cmd and "resource_tracker" not in cmd]
    assert len(workers) == 2, cmdlines
    # MLflow's own per-boot preparation still reaches the workers
    assert proc_environ(workers[0]).get("_MLFLOW_SGI_NAME") == "uvicorn"
    assert requests.get(srv.url + "/api/2.0/mlflow/experiments/search?max_results=1", timeout=10).status_code == 200

    os.kill(srv.proc.pid, signal.SIGTERM)  # the main process only, not the group
    assert srv.proc.wait(30) == 0, srv.output()[-2000:]
    import time

    deadline = time.monotonic() + 10  # the supervisor waits for its workers; init reaps the rest
    while (leftovers := [p for p in pids[1:] if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftovers, f"workers left running: {leftovers}"


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
