"""Session fixtures over the real services (registered in tests/conftest.py's ``pytest_plugins``).

Fixtures (all fail with the reason, never skip, when a real part cannot be provided):
- ``server_venv``: the server image's virtualenv (server-image/install.sh), a ``Venv``.
- ``client_venv``: the stock `mlflow` client + scikit-learn, a ``Venv``.
- ``postgres``: a running ``Postgres``; ``postgres.create_database()`` gives a fresh URI.
- ``mysql``: a running ``MySQL`` (Debian's MariaDB); ``mysql.create_database()`` gives a fresh
  ``mysql://`` URI; ``mysql_uri``: a fresh empty database on it.
- ``s3``: a running MinIO ``S3Server``; ``s3.create_bucket(name)``, ``s3.env()``.
- ``azurite``: a running Azurite blob service (``Azurite``); ``azurite.connection_string(host, port)``.
- ``gcs``: a running fake-gcs-server (``FakeGCSServer``); ``gcs.create_bucket(name)``, ``gcs.env()``.
- ``pg_uri``: a fresh empty database URI on ``postgres``; ``migrated_pg_uri``: one migrated by
  ``mlflow-entrypoint migrate``.
- ``mlflow_server``: factory ``mlflow_server(env, name=...)`` -> ``ServerProc`` running
  ``mlflow-entrypoint serve`` on 127.0.0.1 (healthy); stopped at the end of the test.
- ``entrypoint``: ``entrypoint(subcommand, env)`` -> CompletedProcess (migrate, check, ...).
- ``nginx``: factory ``nginx(default_upstream_port, routes={prefix: port}, **config)`` -> ``Nginx``.
- ``client``: ``client(script, env, timeout)`` runs Python code in the client venv, returns
  CompletedProcess; raises with the output if it fails.
"""
from __future__ import annotations

import subprocess
import textwrap

import pytest

from . import ServiceError
from .azurite import Azurite
from .gcs import FakeGCSServer
from .mlflowproc import run_entrypoint, start_entrypoint
from .mysql import MySQL
from .nginx import Nginx
from .postgres import Postgres
from .s3 import S3Server
from .venvs import client_venv as _client_venv
from .venvs import server_venv as _server_venv


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes-long workload test (e.g. a 200 MB artifact); deselect with -m 'not slow'")


def _provide(what: str, fn):
    try:
        return fn()
    except ServiceError as e:
        pytest.fail(f"{what} could not be provided: {e}", pytrace=False)


@pytest.fixture(scope="session")
def server_venv():
    return _provide("the server image's virtualenv", _server_venv)


@pytest.fixture(scope="session")
def client_venv():
    return _provide("the mlflow client virtualenv", _client_venv)


@pytest.fixture(scope="session")
def postgres():
    pg = _provide("PostgreSQL", lambda: Postgres().start())
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def mysql():
    db = _provide("MySQL (MariaDB)", lambda: MySQL().start())
    yield db
    db.stop()


@pytest.fixture(scope="session")
def s3():
    server = _provide("the S3 server (MinIO)", lambda: S3Server().start())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite():
    server = _provide("the Azure Blob emulator (Azurite)", lambda: Azurite().start())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs():
    server = _provide("the Google Cloud Storage server (fake-gcs-server)", lambda: FakeGCSServer().start())
    yield server
    server.stop()


@pytest.fixture
def pg_uri(postgres):
    return postgres.create_database()


@pytest.fixture
def mysql_uri(mysql):
    return mysql.create_database()


@pytest.fixture
def entrypoint(server_venv, tmp_path):
    def run(subcommand: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
        return run_entrypoint(server_venv, subcommand, env, tmp_path / "entrypoint", timeout=timeout)

    return run


@pytest.fixture(scope="session")
def _migrated_template(postgres, server_venv, tmp_path_factory):
    """One database migrated by `mlflow-entrypoint migrate` per session; tests get copies of it."""
    uri = postgres.create_database("migrated_template")
    res = run_entrypoint(server_venv, "migrate", {"MLFLOW_OPERATOR_BACKEND_STORE_URI": uri},
                         tmp_path_factory.mktemp("template"))
    if res.returncode != 0:
        pytest.fail(f"mlflow-entrypoint migrate failed on a fresh database:\n{res.stdout}\n{res.stderr}", pytrace=False)
    return "migrated_template"


@pytest.fixture
def migrated_pg_uri(postgres, _migrated_template):
    """A fresh database at the image's schema head (a copy of the session's migrated template)."""
    return postgres.create_database(template=_migrated_template)


@pytest.fixture
def mlflow_server(server_venv, tmp_path):
    started = []

    def start(env: dict, name: str = "server", wait: bool = True, timeout: float = 180, port: int | None = None):
        try:
            proc = start_entrypoint(server_venv, env, tmp_path / name, wait=wait, timeout=timeout, name=name, port=port)
        except ServiceError as e:
            pytest.fail(f"mlflow-entrypoint serve ({name}) did not become healthy: {e}", pytrace=False)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def nginx():
    started = []

    def start(default_upstream: int, routes: dict | None = None, **kw) -> Nginx:
        ngx = _provide("NGINX", lambda: Nginx(default_upstream, routes, **kw).start())
        started.append(ngx)
        return ngx

    yield start
    for ngx in started:
        ngx.stop()


@pytest.fixture
def client(client_venv, tmp_path):
    def run(script: str, env: dict, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        workdir = tmp_path / "client"
        workdir.mkdir(exist_ok=True)
        full = {"PATH": f"{client_venv.path / 'bin'}:/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8",
                "MLFLOW_DISABLE_TELEMETRY": "true", "GIT_PYTHON_REFRESH": "quiet",
                # MLflow 3.18's proxied download answers 500 (not 404) for a key missing in S3, and the
                # client's `runs:/<id>/model` first tries the run's path; with the default backoff it
                # retries for ~4 minutes before it looks up the logged model. Same retries, no sleeping.
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
        full.update(env)
        res = subprocess.run([str(client_venv.python), "-c", textwrap.dedent(script)], env=full, cwd=workdir,
                             capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            pytest.fail(f"client script failed (exit {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}",
                        pytrace=False)
        return res

    return run
