"""`migrate`, the schema gate of `serve`, and a served MLflow, on a real MySQL-compatible server: Debian's
MariaDB (hack/testservices/mysql.py). The image claims MySQL for the tracking and the auth database
(PyMySQL, `mysql://` -> `mysql+pymysql://`, migrations under GET_LOCK); this is where that is tested."""
from __future__ import annotations

import subprocess
import time
import uuid

import pytest
import requests

from testservices._util import free_port, silent_listener, stop
from testservices.mlflowproc import _prepare

from .server_env import ADMIN, ADMIN_PASSWORD, O, SECRET_KEY, TUTORIAL, basic_auth, last_json, proxied
from .test_migrate_postgres import dbname, head_revision

pytestmark = pytest.mark.timeout(900)

S3 = "s3://unused-bucket/artifacts"
WAITING = "is running; waiting for its lock"


def tables(mysql, uri: str) -> set[str]:
    return {r[0] for r in mysql.query(dbname(uri), "SELECT table_name FROM information_schema.tables "
                                                   "WHERE table_schema = DATABASE()")}


def lock_name(server_venv, uri: str, kind: str = "tracking") -> str:
    """The GET_LOCK name `migrate` takes for this database (from the entrypoint itself)."""
    return subprocess.run(
        [str(server_venv.python), "-c",
         f"from mlflow_entrypoint.db import mysql_lock_name; print(mysql_lock_name({dbname(uri)!r}, {kind!r}))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


def no_password(mysql, *texts: str) -> None:
    for text in texts:
        assert mysql.password not in text, "the database password appears in the output"


@pytest.fixture(scope="module")
def migrated_mysql_uri(mysql, server_venv, tmp_path_factory):
    """One database migrated by `mlflow-entrypoint migrate` for this module's serving tests (MariaDB has no
    template databases to copy; the tests use their own experiments in it)."""
    from testservices.mlflowproc import run_entrypoint

    uri = mysql.create_database()
    res = run_entrypoint(server_venv, "migrate", {O + "BACKEND_STORE_URI": uri}, tmp_path_factory.mktemp("mig"))
    assert res.returncode == 0 and "(migrated)" in res.stdout, res.stdout + res.stderr
    no_password(mysql, res.stdout, res.stderr)
    return uri


def test_empty_db_is_migrated_and_second_run_is_a_noop(mysql_uri, entrypoint, mysql, server_venv):
    head = head_revision(server_venv)
    t0 = time.monotonic()
    first = entrypoint("migrate", {O + "BACKEND_STORE_URI": mysql_uri})
    took = time.monotonic() - t0
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"revision before (empty), after {head} (migrated)" in first.stdout, first.stdout
    assert f"mysql 127.0.0.1:{mysql.port}/{dbname(mysql_uri)}" in first.stdout, first.stdout
    assert mysql.query(dbname(mysql_uri), "SELECT version_num FROM alembic_version") == [(head,)]
    assert {"experiments", "runs", "metrics", "registered_models", "logged_models"} <= tables(mysql, mysql_uri)

    second = entrypoint("migrate", {O + "BACKEND_STORE_URI": mysql_uri})
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"revision {head} is the image's head; nothing to do" in second.stdout, second.stdout
    no_password(mysql, first.stdout, first.stderr, second.stdout, second.stderr)
    print(f"migrating an empty MariaDB {mysql.version} database took {took:.1f}s")


def test_two_concurrent_migrations_do_not_both_migrate(mysql, server_venv, tmp_path):
    """The test holds the database's migration lock (GET_LOCK, as `migrate` takes it) while two `migrate`
    processes start: both must wait and leave the database empty. A migration of another database on the
    same server does not wait (GET_LOCK names are server-wide: the name carries the database). Then the
    lock is released: exactly one of the two migrates, the other finds the head and does nothing."""
    uri, other = mysql.create_database(), mysql.create_database()
    holder = subprocess.Popen(
        ["/usr/bin/mariadb", f"--defaults-file={mysql.client_cnf}", "--batch", "--skip-column-names", "--unbuffered"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    procs: list[subprocess.Popen] = []
    try:
        holder.stdin.write(f"SELECT GET_LOCK('{lock_name(server_venv, uri)}', 10);\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "1", "the test could not take the migration lock"

        logs = []
        for i, target in enumerate((uri, uri, other)):
            env, _, _ = _prepare(server_venv, {O + "BACKEND_STORE_URI": target}, tmp_path / f"m{i}", None)
            out, err = tmp_path / f"m{i}.out", tmp_path / f"m{i}.err"
            logs.append((out, err))
            with open(out, "w") as fo, open(err, "w") as fe:
                procs.append(subprocess.Popen([str(server_venv.bin("mlflow-entrypoint")), "migrate"], env=env,
                                              stdout=fo, stderr=fe, start_new_session=True))

        # the migration of the other database finishes while the lock of the first is held
        assert procs[2].wait(timeout=600) == 0, logs[2][0].read_text() + logs[2][1].read_text()
        assert "(migrated)" in logs[2][0].read_text() and WAITING not in logs[2][1].read_text()
        deadline = time.monotonic() + 120
        while not all(WAITING in err.read_text() for out, err in logs[:2]):
            assert all(p.poll() is None for p in procs[:2]), [o.read_text() + e.read_text() for o, e in logs[:2]]
            assert time.monotonic() < deadline, "the two migrations did not both report waiting for the lock"
            time.sleep(0.5)
        assert tables(mysql, uri) == set(), "a migration ran while the lock was held"

        holder.stdin.close()  # the session ends: MariaDB releases its locks
        assert holder.wait(timeout=30) == 0
        codes = [p.wait(timeout=600) for p in procs[:2]]
    finally:
        for p in procs:
            stop(p)
        stop(holder)
    outs = [(o.read_text(), e.read_text()) for o, e in logs]
    assert codes == [0, 0], outs
    stdouts = [o for o, _ in outs[:2]]
    migrated = [i for i, s in enumerate(stdouts) if "(migrated)" in s]
    noop = [i for i, s in enumerate(stdouts) if "nothing to do" in s]
    assert len(migrated) == 1 and len(noop) == 1, stdouts
    print(f"process m{migrated[0]} got the lock first and migrated; m{noop[0]} waited, then had nothing to do")
    no_password(mysql, *[t for pair in outs for t in pair])


def test_serve_refuses_an_empty_database_and_leaves_it_empty(mysql_uri, entrypoint, mysql):
    res = entrypoint("serve", {O + "BACKEND_STORE_URI": mysql_uri, O + "ARTIFACTS_DESTINATION": S3}, timeout=120)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "refusing to start" in res.stderr and "has no MLflow schema yet" in res.stderr, res.stderr
    assert "mlflow-entrypoint migrate" in res.stderr
    assert tables(mysql, mysql_uri) == set()  # MLflow would have created the tables itself
    no_password(mysql, res.stdout, res.stderr)


def test_serve_on_the_migrated_database_runs_the_tutorial(mlflow_server, client, migrated_mysql_uri, mysql, tmp_path):
    srv = mlflow_server(proxied(migrated_mysql_uri, str(tmp_path / "artifacts")))
    experiment = "tutorial-" + uuid.uuid4().hex[:6]
    out = last_json(client(TUTORIAL, {"MLFLOW_TRACKING_URI": srv.url, "EXPERIMENT": experiment}).stdout)
    assert out["artifact_uri"].startswith("mlflow-artifacts:"), out
    # the run is in MariaDB, the artifacts in the proxied destination
    db = dbname(migrated_mysql_uri)
    assert mysql.query(db, f"SELECT status FROM runs WHERE run_uuid = '{out['run_id']}'") == [("FINISHED",)]
    assert mysql.query(db, f"SELECT value FROM params WHERE run_uuid = '{out['run_id']}' AND `key` = 'tutorial'") \
        == [("remote-tracking",)]
    assert list((tmp_path / "artifacts").rglob("notes.txt")), "the artifact is not in the proxied destination"
    no_password(mysql, srv.output())


def test_basic_auth_with_its_database_on_mysql(mysql, migrated_mysql_uri, entrypoint, mlflow_server, client, tmp_path):
    auth = mysql.create_database()
    env = proxied(migrated_mysql_uri, str(tmp_path / "artifacts"), **basic_auth(auth))
    mig = entrypoint("migrate", env)
    assert mig.returncode == 0, mig.stdout + mig.stderr
    assert "tracking database" in mig.stdout and "nothing to do" in mig.stdout, mig.stdout
    assert "auth database" in mig.stdout and mig.stdout.count("(migrated)") == 1, mig.stdout
    assert len(mysql.query(dbname(auth), "SELECT version_num FROM alembic_version_auth")) == 1
    assert {"users", "experiment_permissions", "registered_model_permissions"} <= tables(mysql, auth)
    # MLflow names both foreign keys to users `fk_user_id`; MySQL wants names unique in a database
    fks = mysql.query(dbname(auth), "SELECT table_name, constraint_name FROM information_schema.referential_constraints "
                                    "WHERE constraint_schema = DATABASE() AND referenced_table_name = 'users'")
    assert ("experiment_permissions", "fk_user_id") in fks, fks
    assert ("registered_model_permissions", "fk_registered_model_perm_user_id") in fks, fks

    srv = mlflow_server(env)
    search = srv.url + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=10).status_code == 401
    assert requests.get(search, auth=(ADMIN, ADMIN_PASSWORD + "x"), timeout=10).status_code == 401
    assert requests.get(search, auth=(ADMIN, ADMIN_PASSWORD), timeout=10).status_code == 200
    user, pw = "u" + uuid.uuid4().hex[:6], "pw-" + uuid.uuid4().hex
    created = requests.post(srv.url + "/api/2.0/mlflow/users/create", json={"username": user, "password": pw},
                            auth=(ADMIN, ADMIN_PASSWORD), timeout=10)
    assert created.status_code == 200, created.text
    assert mysql.query(dbname(auth), f"SELECT username FROM users WHERE username = '{user}'") == [(user,)]
    assert requests.get(search, auth=(user, pw), timeout=10).status_code == 200

    out = last_json(client(TUTORIAL, {"MLFLOW_TRACKING_URI": srv.url, "MLFLOW_TRACKING_USERNAME": ADMIN,
                                      "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD,
                                      "EXPERIMENT": "auth-" + uuid.uuid4().hex[:6]}).stdout)
    assert out["run_id"]
    text = srv.output() + mig.stdout + mig.stderr
    no_password(mysql, text)
    assert ADMIN_PASSWORD not in text and SECRET_KEY not in text


def test_wait_for_backend_answers_when_up(mysql_uri, entrypoint, mysql):
    res = entrypoint("wait-for-backend", {O + "BACKEND_STORE_URI": mysql_uri})
    assert res.returncode == 0, res.stderr
    assert "answered" in res.stdout and f"mysql 127.0.0.1:{mysql.port}" in res.stdout, res.stdout
    no_password(mysql, res.stdout, res.stderr)


def older_revision(server_venv) -> str:
    return subprocess.run(
        [str(server_venv.python), "-c",
         "from mlflow_entrypoint.db import TRACKING; s=TRACKING.scripts(); print(s.get_revision(s.get_current_head()).down_revision)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


@pytest.fixture
def schema_at(mysql, migrated_mysql_uri, server_venv):
    """Sets the shared migrated database's recorded revision for one test, and puts the head back."""
    def set_revision(revision: str) -> None:
        mysql.query(dbname(migrated_mysql_uri), f"UPDATE alembic_version SET version_num = '{revision}'")

    yield set_revision
    set_revision(head_revision(server_venv))


def test_serve_refuses_a_schema_behind_the_image(migrated_mysql_uri, schema_at, entrypoint, mysql, server_venv):
    head, older = head_revision(server_venv), older_revision(server_venv)
    schema_at(older)
    res = entrypoint("serve", {O + "BACKEND_STORE_URI": migrated_mysql_uri, O + "ARTIFACTS_DESTINATION": S3}, timeout=120)
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"is at schema revision {older}, the image expects {head}" in res.stderr, res.stderr
    assert mysql.query(dbname(migrated_mysql_uri), "SELECT version_num FROM alembic_version") == [(older,)]
    no_password(mysql, res.stdout, res.stderr)


def test_downgrade_is_refused_by_migrate_and_serve(migrated_mysql_uri, schema_at, entrypoint, mysql):
    schema_at("ffffffffffff")  # a revision from a newer image
    mig = entrypoint("migrate", {O + "BACKEND_STORE_URI": migrated_mysql_uri})
    assert mig.returncode == 3, mig.stdout + mig.stderr
    assert "ffffffffffff" in mig.stderr and "downgrades are refused" in mig.stderr, mig.stderr
    srv = entrypoint("serve", {O + "BACKEND_STORE_URI": migrated_mysql_uri, O + "ARTIFACTS_DESTINATION": S3}, timeout=120)
    assert srv.returncode == 3 and "does not know" in srv.stderr, srv.stderr
    assert mysql.query(dbname(migrated_mysql_uri), "SELECT version_num FROM alembic_version") == [("ffffffffffff",)]
    no_password(mysql, mig.stdout, mig.stderr, srv.stdout, srv.stderr)


def test_wait_for_backend_fails_within_its_bound_when_db_is_down(entrypoint, mysql):
    port = free_port()  # nothing listens there
    uri = f"mysql://mlflow:{mysql.password}@127.0.0.1:{port}/mlflow"
    t0 = time.monotonic()
    res = entrypoint("wait-for-backend", {O + "BACKEND_STORE_URI": uri, O + "BACKEND_WAIT_SECONDS": "3"}, timeout=60)
    elapsed = time.monotonic() - t0
    out = res.stdout + res.stderr
    assert res.returncode == 3, out
    assert f"mysql 127.0.0.1:{port}" in out and "did not answer within 3s" in out, out
    no_password(mysql, out)
    assert elapsed < 3 + 15, elapsed


def test_wait_for_backend_does_not_hang_on_a_host_that_never_replies(entrypoint, mysql):
    """MySQL's handshake starts with the server's greeting: a host that accepts TCP and never sends it
    must not hang the client past its bound (PyMySQL's connect_timeout covers only the TCP connect)."""
    with silent_listener() as (port, accepted):
        uri = f"mysql://mlflow:{mysql.password}@127.0.0.1:{port}/mlflow"
        t0 = time.monotonic()
        res = entrypoint("wait-for-backend", {O + "BACKEND_STORE_URI": uri, O + "BACKEND_WAIT_SECONDS": "4"}, timeout=90)
        elapsed = time.monotonic() - t0
        connected = bool(accepted)
    out = res.stdout + res.stderr
    assert res.returncode == 3, out
    assert connected, "the client never connected: the test did not exercise a silent host"
    assert f"mysql 127.0.0.1:{port}" in out and "did not answer within 4s" in out, out
    no_password(mysql, out)
    assert elapsed < 4 + 20, elapsed
