"""What the OIDC tests of every tier share (tests/workload/test_server_oidc*.py, tests/node/test_oidc_on_real_pods.py):
Dex's users, the server's client secret and another application's client, bearer and forged
tokens, Dex's storage on PostgreSQL, every artifact route, and Chromium's sign-in at Dex's
password form.

ALICE is in the allowed group, BOB only in the admin group, MALLORY in neither.
"""
from __future__ import annotations

import base64
import json
import time

from testservices.oidc import DexClient, DexUser

ALICE = DexUser("alice@example.com", "alice-pw-" + base64.b32encode(bytes(range(5))).decode(), ["ml-team"])
BOB = DexUser("bob@example.com", "bob-pw-7f3k2m9q", ["ml-admins"])  # the admin group only
MALLORY = DexUser("mallory@example.com", "mallory-pw-5t8w1x", ["sales"])
CLIENT_SECRET = "mlflow-client-" + base64.b32encode(b"0123456789").decode()
ALLOWED_GROUP, ADMIN_GROUP = "ml-team", "ml-admins"
# Another application registered at the same provider: its users' tokens are real, for another audience.
OTHER = DexClient("other-app", "other-app-secret-42", ["http://127.0.0.1:1/callback"])
# Both prefixes MLflow serves the artifact routes under.
ARTIFACT_APIS = ("/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts")


def artifact_requests(api: str) -> list[tuple[str, str, dict]]:
    """(method, path, requests kwargs) of every artifact route MLflow serves under one prefix:
    upload, download, list, delete, multipart create, complete and abort."""
    return [
        ("PUT", f"{api}/artifacts/anon/file.txt", {"data": b"anonymous bytes"}),
        ("GET", f"{api}/artifacts/anon/file.txt", {}),
        ("GET", f"{api}/artifacts", {"params": {"path": "anon"}}),
        ("DELETE", f"{api}/artifacts/anon/file.txt", {}),
        ("POST", f"{api}/mpu/create/anon/big.bin", {"json": {"path": "big.bin", "num_parts": 2}}),
        ("POST", f"{api}/mpu/complete/anon/big.bin", {"json": {"path": "big.bin", "upload_id": "x", "parts": []}}),
        ("POST", f"{api}/mpu/abort/anon/big.bin", {"json": {"path": "big.bin", "upload_id": "x"}}),
    ]


def raw_request(path: str, kw: dict) -> tuple[str, bytes | None, dict[str, str]]:
    """One of artifact_requests' entries as a path with its query, a body and its headers, for
    clients other than requests (a plain HTTP connection, urllib inside a pod)."""
    import urllib.parse

    if "params" in kw:
        path += "?" + urllib.parse.urlencode(kw["params"])
    if "json" in kw:
        return path, json.dumps(kw["json"]).encode(), {"Content-Type": "application/json"}
    return path, kw.get("data"), {}


def dex_storage(postgres, dbname: str) -> dict:
    """Dex's storage setting for a fresh database on hack/testservices' PostgreSQL."""
    postgres.create_database(dbname)
    return {"type": "postgres", "config": {"host": postgres.host, "port": postgres.port, "database": dbname,
                                           "user": postgres.user, "password": postgres.password,
                                           "ssl": {"mode": "disable"}}}


def claims(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def forged(token: str) -> str:
    """The same claims, the user's groups raised to the admin group, the signature kept: a token
    Dex never signed."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["groups"] = [ALLOWED_GROUP, ADMIN_GROUP]
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return ".".join((header, raw, signature))


def browser_signs_in(browser, url: str, user: DexUser, timeout: float = 120) -> str:
    """Chromium opens `url` (a page behind the sidecar), is sent to Dex's password form, submits
    the user's password; Dex posts the code back to the sidecar's callback, which sets the session
    cookie and sends the browser to the UI. Returns the login page's text."""
    login = browser.open(url, "Log in", timeout=timeout)
    assert "password" in login.lower(), login[:500]
    browser.call("Runtime.evaluate", expression=(
        f"document.querySelector('#login').value = {json.dumps(user.email)};"
        f"document.querySelector('#password').value = {json.dumps(user.password)};"
        "document.querySelector('form').submit();"))
    deadline = time.monotonic() + timeout
    while "Experiments" not in browser.text() and time.monotonic() < deadline:
        time.sleep(1)
    return login
