"""MLflow basic-auth as the entrypoint configures it: two server processes sharing the auth database on
PostgreSQL and one Flask secret key (what several replicas do)."""
from __future__ import annotations

import re
import stat
import uuid

import pytest
import requests

from testservices.mlflowproc import start_entrypoint

from .server_env import ADMIN, ADMIN_PASSWORD, O, SECRET_KEY, TUTORIAL, basic_auth, last_json, proxied

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def auth_servers(server_venv, postgres, _migrated_template, tmp_path_factory):
    from testservices.mlflowproc import run_entrypoint

    tracking = postgres.create_database(template=_migrated_template)
    auth_db = postgres.create_database()
    work = tmp_path_factory.mktemp("auth")
    env = proxied(tracking, str(work / "artifacts"), **basic_auth(auth_db), **{O + "WORKERS": "2"})
    mig = run_entrypoint(server_venv, "migrate", env, work / "migrate")
    assert mig.returncode == 0 and "auth database" in mig.stdout, mig.stdout + mig.stderr
    servers = []
    try:
        for name in ("a", "b"):
            servers.append(start_entrypoint(server_venv, env, work / name, name=name))
        yield servers
    finally:
        for s in servers:
            s.stop()


SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_credentials_are_required_except_for_health(auth_servers):
    a = auth_servers[0]
    assert requests.get(a.url + "/health", timeout=10).status_code == 200
    assert requests.get(a.url + SEARCH, timeout=10).status_code == 401
    assert requests.get(a.url + SEARCH, auth=(ADMIN, ADMIN_PASSWORD + "x"), timeout=10).status_code == 401
    assert requests.get(a.url + SEARCH, auth=("nobody", ADMIN_PASSWORD), timeout=10).status_code == 401
    assert requests.get(a.url + SEARCH, auth=(ADMIN, ADMIN_PASSWORD), timeout=10).status_code == 200


def test_tutorial_with_tracking_credentials(auth_servers, client):
    a = auth_servers[0]
    out = client(TUTORIAL, {"MLFLOW_TRACKING_URI": a.url, "MLFLOW_TRACKING_USERNAME": ADMIN,
                            "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD, "EXPERIMENT": "auth-" + uuid.uuid4().hex[:6]})
    assert last_json(out.stdout)["run_id"]
    denied = client("import mlflow; mlflow.set_experiment('x')", {"MLFLOW_TRACKING_URI": a.url}, check=False)
    assert denied.returncode != 0 and "401" in denied.stderr + denied.stdout


def test_user_created_on_one_replica_logs_in_on_the_other(auth_servers):
    a, b = auth_servers
    user, pw = "user-" + uuid.uuid4().hex[:6], "pw-" + uuid.uuid4().hex
    r = requests.post(a.url + "/api/2.0/mlflow/users/create", json={"username": user, "password": pw},
                      auth=(ADMIN, ADMIN_PASSWORD), timeout=10)
    assert r.status_code == 200, r.text
    assert requests.get(b.url + SEARCH, auth=(user, pw), timeout=10).status_code == 200
    assert requests.get(b.url + SEARCH, auth=(user, pw + "x"), timeout=10).status_code == 401


def test_session_from_one_replica_is_valid_on_the_other(auth_servers):
    """The signup form's CSRF token lives in a Flask session cookie signed with the secret key: a form
    served by replica A posts successfully to replica B only if both share MLFLOW_FLASK_SERVER_SECRET_KEY."""
    a, b = auth_servers
    session = requests.Session()
    session.auth = (ADMIN, ADMIN_PASSWORD)
    page = session.get(a.url + "/signup", timeout=10)
    assert page.status_code == 200, page.text[:300]
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', page.text)
    assert token, page.text[:1000]
    user = "ui-" + uuid.uuid4().hex[:6]
    form = {"csrf_token": token.group(1), "username": user, "password": "pw-" + uuid.uuid4().hex}
    # without A's session cookie, B rejects the form (CSRF is enforced) ...
    bare = requests.post(b.url + "/api/2.0/mlflow/users/create-ui", data=form, auth=(ADMIN, ADMIN_PASSWORD), timeout=10)
    assert bare.status_code == 400, bare.text[:300]
    # ... with it, B accepts: the session signed by A is valid on B
    ok = session.post(b.url + "/api/2.0/mlflow/users/create-ui", data=form, timeout=10)
    assert ok.status_code == 200 and "Successfully signed up" in ok.text, ok.text[:500]
    got = requests.get(a.url + "/api/2.0/mlflow/users/get", params={"username": user}, auth=(ADMIN, ADMIN_PASSWORD), timeout=10)
    assert got.status_code == 200 and user in got.text


def test_no_secret_in_logs_or_generated_config(auth_servers, postgres):
    for srv in auth_servers:
        text = srv.output()
        for secret in (ADMIN_PASSWORD, SECRET_KEY, postgres.password):
            assert secret not in text
        ini = srv.scratch / "basic_auth.ini"
        assert stat.S_IMODE(ini.stat().st_mode) == 0o600
        content = ini.read_text()
        assert ADMIN_PASSWORD not in content and SECRET_KEY not in content
        assert "auth_cache_ttl_seconds = 60" in content
        cmdline = open(f"/proc/{srv.proc.pid}/cmdline", "rb").read().decode(errors="replace")
        assert postgres.password not in cmdline and ADMIN_PASSWORD not in cmdline
