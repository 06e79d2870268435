"""`migrate`, the schema gate of `serve`, and `wait-for-backend`, on a real PostgreSQL."""
from __future__ import annotations

import subprocess
import time

from testservices._util import free_port, silent_listener
from testservices.mlflowproc import _prepare

from .server_env import O, basic_auth

S3 = "s3://unused-bucket/artifacts"


def dbname(uri: str) -> str:
    return uri.rsplit("/", 1)[1]


def head_revision(server_venv) -> str:
    out = subprocess.run(
        [str(server_venv.python), "-c",
         "from mlflow_entrypoint.db import TRACKING; print(TRACKING.scripts().get_current_head())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert len(out) == 12, out
    return out


def test_empty_db_is_migrated_and_second_run_is_a_noop(pg_uri, entrypoint, postgres, server_venv):
    head = head_revision(server_venv)
    first = entrypoint("migrate", {O + "BACKEND_STORE_URI": pg_uri})
    assert first.returncode == 0, first.stderr
    assert f"revision before (empty), after {head} (migrated)" in first.stdout, first.stdout
    assert postgres.query(dbname(pg_uri), "SELECT version_num FROM alembic_version") == [(head,)]
    tables = {r[0] for r in postgres.query(dbname(pg_uri), "SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert {"experiments", "runs", "metrics", "registered_models", "logged_models"} <= tables

    second = entrypoint("migrate", {O + "BACKEND_STORE_URI": pg_uri})
    assert second.returncode == 0, second.stderr
    assert f"revision {head} is the image's head; nothing to do" in second.stdout, second.stdout
    assert pg_uri.split(":")[2].split("@")[0] not in first.stdout + first.stderr + second.stdout + second.stderr


def test_two_concurrent_migrations_do_not_both_migrate(pg_uri, server_venv, tmp_path):
    procs = []
    for i in range(2):
        env, _, _ = _prepare(server_venv, {O + "BACKEND_STORE_URI": pg_uri}, tmp_path / f"m{i}", None)
        procs.append(subprocess.Popen([str(server_venv.bin("mlflow-entrypoint")), "migrate"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    stdouts = [o[0] for o in outs]
    migrated = [s for s in stdouts if "(migrated)" in s]
    noop = [s for s in stdouts if "nothing to do" in s]
    assert len(migrated) == 1 and len(noop) == 1, stdouts


def test_serve_refuses_an_empty_database_and_leaves_it_empty(pg_uri, entrypoint, postgres):
    res = entrypoint("serve", {O + "BACKEND_STORE_URI": pg_uri, O + "ARTIFACTS_DESTINATION": S3}, timeout=120)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "refusing to start" in res.stderr and "has no MLflow schema yet" in res.stderr, res.stderr
    assert "mlflow-entrypoint migrate" in res.stderr
    # MLflow would have created the tables itself: it must not have been started at all
    assert postgres.query(dbname(pg_uri), "SELECT count(*) FROM pg_tables WHERE schemaname='public'") == [(0,)]


def test_serve_refuses_a_schema_behind_the_image(migrated_pg_uri, entrypoint, postgres, server_venv):
    head = head_revision(server_venv)
    older = subprocess.run(
        [str(server_venv.python), "-c",
         "from mlflow_entrypoint.db import TRACKING; s=TRACKING.scripts(); print(s.get_revision(s.get_current_head()).down_revision)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    postgres.query(dbname(migrated_pg_uri), "UPDATE alembic_version SET version_num = %s", older)
    res = entrypoint("serve", {O + "BACKEND_STORE_URI": migrated_pg_uri, O + "ARTIFACTS_DESTINATION": S3}, timeout=120)
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"is at schema revision {older}, the image expects {head}" in res.stderr, res.stderr
    assert postgres.query(dbname(migrated_pg_uri), "SELECT version_num FROM alembic_version") == [(older,)]


def test_downgrade_is_refused_by_migrate_and_serve(migrated_pg_uri, entrypoint, postgres):
    postgres.query(dbname(migrated_pg_uri), "UPDATE alembic_version SET version_num = 'ffffffffffff'")
    mig = entrypoint("migrate", {O + "BACKEND_STORE_URI": migrated_pg_uri})
    assert mig.returncode == 3, mig.stdout + mig.stderr
    assert "ffffffffffff" in mig.stderr and "downgrades are refused" in mig.stderr, mig.stderr
    srv = entrypoint("serve", {O + "BACKEND_STORE_URI": migrated_pg_uri, O + "ARTIFACTS_DESTINATION": S3}, timeout=120)
    assert srv.returncode == 3 and "does not know" in srv.stderr, srv.stderr
    assert postgres.query(dbname(migrated_pg_uri), "SELECT version_num FROM alembic_version") == [("ffffffffffff",)]


def test_auth_database_is_migrated_with_the_tracking_database(postgres, migrated_pg_uri, entrypoint):
    auth = postgres.create_database()
    env = {O + "BACKEND_STORE_URI": migrated_pg_uri, **basic_auth(auth)}
    first = entrypoint("migrate", env)
    assert first.returncode == 0, first.stderr
    assert "tracking database" in first.stdout and "nothing to do" in first.stdout
    assert "auth database" in first.stdout and first.stdout.count("(migrated)") == 1, first.stdout
    assert postgres.query(dbname(auth), "SELECT count(*) FROM alembic_version_auth") == [(1,)]
    second = entrypoint("migrate", env)
    assert second.returncode == 0 and second.stdout.count("nothing to do") == 2, second.stdout


def test_wait_for_backend_answers_when_up(pg_uri, entrypoint):
    res = entrypoint("wait-for-backend", {O + "BACKEND_STORE_URI": pg_uri})
    assert res.returncode == 0, res.stderr
    assert "answered" in res.stdout and "127.0.0.1" in res.stdout


def test_wait_for_backend_fails_within_its_bound_when_db_is_down(entrypoint, postgres):
    port = free_port()  # nothing listens there
    uri = f"postgresql://mlflow:{postgres.password}@127.0.0.1:{port}/mlflow"
    t0 = time.monotonic()
    res = entrypoint("wait-for-backend", {O + "BACKEND_STORE_URI": uri, O + "BACKEND_WAIT_SECONDS": "3"}, timeout=60)
    elapsed = time.monotonic() - t0
    out = res.stdout + res.stderr
    assert res.returncode == 3, out
    assert f"127.0.0.1:{port}" in out and "did not answer within 3s" in out, out
    assert postgres.password not in out
    assert elapsed < 3 + 15, elapsed  # the bound, one attempt's timeout, and interpreter start-up


def test_wait_for_backend_does_not_hang_on_a_host_that_never_replies(entrypoint, postgres):
    """A host that accepts TCP and never answers (the issue's 'hangs forever with no log')."""
    with silent_listener() as (port, accepted):
        uri = f"postgresql://mlflow:{postgres.password}@127.0.0.1:{port}/mlflow"
        t0 = time.monotonic()
        res = entrypoint("wait-for-backend", {O + "BACKEND_STORE_URI": uri, O + "BACKEND_WAIT_SECONDS": "4"}, timeout=90)
        elapsed = time.monotonic() - t0
        connected = bool(accepted)
    out = res.stdout + res.stderr
    assert res.returncode == 3, out
    assert connected, "the client never connected: the test did not exercise a silent host"
    assert f"127.0.0.1:{port}" in out and postgres.password not in out, out
    assert elapsed < 4 + 20, elapsed
