"""What the OIDC tests of every tier share (tests/workload/test_server_oidc*.py, tests/node/test_oidc_on_real_pods.py):
Dex's users and the server's client secret, bearer and forged tokens, and Chromium's sign-in at
Dex's password form.

ALICE is in the allowed group, BOB only in the admin group, MALLORY in neither.
"""
from __future__ import annotations

import base64
import json
import time

from testservices.oidc import DexUser

ALICE = DexUser("alice@example.com", "alice-pw-" + base64.b32encode(bytes(range(5))).decode(), ["ml-team"])
BOB = DexUser("bob@example.com", "bob-pw-7f3k2m9q", ["ml-admins"])  # the admin group only
MALLORY = DexUser("mallory@example.com", "mallory-pw-5t8w1x", ["sales"])
CLIENT_SECRET = "mlflow-client-" + base64.b32encode(b"0123456789").decode()
ALLOWED_GROUP, ADMIN_GROUP = "ml-team", "ml-admins"


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
