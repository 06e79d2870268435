"""Basic-auth end to end (08-team.yaml: PostgreSQL for tracking and users, proxied S3, HTTPS Ingress, two
replicas): the admin credentials the operator generated work; anonymous and wrong-password requests get
401; a session started on one replica is honoured by the other (they share the Flask secret key and the
users database).
"""
from __future__ import annotations

import json
import re
import secrets

import pytest
import requests

from .conftest import last_json, tutorial_env
from .podrunner import loopback_of
from .server_env import TUTORIAL

pytestmark = pytest.mark.timeout(1500)

HOST = "mlflow.fraud.example.com"

STATUS = r"""
import json, os
import requests

base = os.environ["MLFLOW_TRACKING_URI"]
url = base + "/api/2.0/mlflow/experiments/search"
out = {
    "anonymous": requests.get(url, params={"max_results": 1}, timeout=60).status_code,
    "wrong": requests.get(url, params={"max_results": 1}, auth=(os.environ["USER"], "not-the-password-123"), timeout=60).status_code,
    "admin": requests.get(url, params={"max_results": 1}, auth=(os.environ["USER"], os.environ["PASSWORD"]), timeout=60).status_code,
    "health": requests.get(base + "/health", timeout=60).status_code,
}
print(json.dumps(out))
"""


def pod_session(pod: dict) -> tuple[requests.Session, str]:
    """A client of one replica, at its pod IP (accepted as Host: the entrypoint allows the pod IPs of MLFLOW_OPERATOR_POD_IPS)."""
    ip = pod["status"]["podIP"]
    session = requests.Session()
    session.headers["Host"] = f"{ip}:5000"
    return session, f"http://{loopback_of(ip)}:5000"


def test_basic_auth_admin_secret_401s_and_sessions_across_replicas(e2e):
    ts = e2e.example("08-team.yaml")
    bucket = e2e.bucket("acme-team-fraud")
    s3 = ts["spec"]["artifacts"]["s3"]
    s3["endpointUrl"], s3["region"] = e2e.s3.endpoint, e2e.s3.region
    e2e.secret("fraud-mlflow-db", {"tracking-uri": e2e.database("fraud"), "auth-uri": e2e.database("fraud_auth")})
    e2e.s3_secret("fraud-mlflow-s3")
    e2e.tls_secret("mlflow-fraud-tls", [HOST])
    e2e.apply(ts)
    live = e2e.timed("ready", lambda: e2e.wait_ready("fraud", timeout=600, MigrationsApplied="True"))
    url = live["status"]["url"]
    assert url == f"https://{HOST}", url
    user, password = e2e.secret_value("fraud-admin", "username"), e2e.secret_value("fraud-admin", "password")
    assert user == "admin" and len(password) >= 12

    codes = last_json(e2e.client(STATUS, {"MLFLOW_TRACKING_URI": url, "USER": user, "PASSWORD": password}).stdout)
    assert codes == {"anonymous": 401, "wrong": 401, "admin": 200, "health": 200}, codes

    # the tutorial as the admin, through the Ingress (MLflow's own client variables)
    creds = {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
    out = e2e.timed("tutorial", lambda: last_json(e2e.client(TUTORIAL, tutorial_env(url, **creds)).stdout))
    assert any(k.endswith("MLmodel") for k in e2e.s3_keys(bucket, "mlflow/")), "the model is not in S3"
    denied = e2e.client(TUTORIAL, tutorial_env(url, MLFLOW_TRACKING_USERNAME=user,
                                               MLFLOW_TRACKING_PASSWORD="wrong-password-1234"), check=False)
    assert denied.returncode != 0 and "401" in denied.stderr, denied.stderr[-2000:]

    # Sessions: the signup form of replica A (its CSRF token lives in a Flask session cookie) is
    # submitted to replica B. B accepts it only if both sign sessions with the same secret key.
    pods = e2e.wait_pods("fraud", 2)
    (a, a_url), (b, b_url) = pod_session(pods[0]), pod_session(pods[1])
    form = a.get(a_url + "/signup", auth=(user, password), timeout=60)
    assert form.status_code == 200, form.text[:300]
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    cookie = "; ".join(f"{c.name}={c.value}" for c in a.cookies)
    assert cookie, "replica A set no session cookie"
    new_user, new_password = "analyst-" + secrets.token_hex(3), "pw-" + secrets.token_urlsafe(12)
    created = b.post(b_url + "/api/2.0/mlflow/users/create-ui", auth=(user, password), timeout=60,
                     headers={"Cookie": cookie},
                     data={"csrf_token": token, "username": new_user, "password": new_password})
    assert created.status_code == 200 and "Successfully signed up" in created.text, (created.status_code, created.text[:500])
    # without the session the same token is refused: the check above is a real one
    stranger = requests.post(b_url + "/api/2.0/mlflow/users/create-ui", auth=(user, password), timeout=60,
                             headers={"Host": b.headers["Host"]},
                             data={"csrf_token": token, "username": new_user + "x", "password": new_password})
    assert stranger.status_code == 400 and "CSRF" in stranger.text, (stranger.status_code, stranger.text[:300])
    # the new user exists for both replicas (one users database) and can read through either
    for session, base in ((a, a_url), (b, b_url)):
        got = session.get(base + "/api/2.0/mlflow/runs/get", params={"run_id": out["run_id"]},
                          auth=(new_user, new_password), timeout=60)
        assert got.status_code == 200, (base, got.status_code, got.text[:300])

    # nothing the operator writes contains the generated password
    assert password not in json.dumps(e2e.get("fraud").get("status"))
    assert password not in e2e.operator.log_path.read_text(errors="replace")
