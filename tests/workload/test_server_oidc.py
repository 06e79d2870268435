"""auth.type OIDC at the workload tier: a real OpenID Connect provider (Dex, built from its Go
module), the sidecar exactly as the operator renders it (oauth2-proxy, built from its Go module;
only its listen, upstream and CA paths are mapped to this machine's loopback), and the server
image's entrypoint behind it on 127.0.0.1, as in the pod.

Two "replicas" (two server + proxy pairs on one PostgreSQL, one cookie secret) share sessions.
Dex signs users in with static passwords (users with groups) and gives clients real ID tokens by
the password grant. What is checked: no token, a forged token, a token for another client and an
expired token get 401; a user outside the allowed groups 403; a token of an allowed user logs the
seed tutorial with the stock client (MLFLOW_TRACKING_TOKEN); only the admin group deletes, and a
client's own X-Forwarded-Groups header does not make it an admin; a session made through one
replica is valid on the other (and not on a proxy with another cookie secret); headless Chromium
signs in to the UI at Dex and sees the tutorial's run; no secret or token in any log.
"""
from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from mlflow_operator.api import load_trackingserver
from mlflow_operator.render import render
from mlflow_operator.render import oidc as oidc_render
from testservices import ServiceError
from testservices.mlflowproc import start_entrypoint
from testservices.oidc import Dex, DexClient, DexUser, OAuth2Proxy, free_port
from tests.browser import Browser, spki_sha256
from tests.oidc import ALICE, BOB, CLIENT_SECRET, MALLORY, OTHER, bearer, browser_signs_in, forged

from .server_env import ARTIFACTS_DIR, last_json, tutorial_env
from .server_env import TUTORIAL

pytestmark = pytest.mark.timeout(1500)

ID_TOKEN_SECONDS = 75  # short, so the expired token of the last test expires during the module
API = "/api/2.0/mlflow/experiments/search?max_results=10"


def trackingserver(proxy_port: int) -> dict:
    """What a team would write, with the provider and the callback of this machine."""
    return {
        "apiVersion": "mlflow-operator.dev/v1alpha1",
        "kind": "TrackingServer",
        "metadata": {"name": "sso", "namespace": "ml"},
        "spec": {
            "replicas": 2,
            "backendStore": {"type": "Database", "uri": {"secretKeyRef": {"name": "db", "key": "uri"}}},
            "artifacts": {"destination": "/data/artifacts"},
            "storage": {"accessModes": ["ReadWriteMany"]},
            "auth": {"type": "OIDC", "oidc": {
                "issuerUrl": "https://127.0.0.1:0/dex",  # set below once Dex has its port
                "clientId": "mlflow",
                "clientSecret": {"secretKeyRef": {"name": "sso-client", "key": "secret"}},
                "allowedGroups": ["ml-team"],
                "adminGroup": "ml-admins",
                "redirectUrl": f"http://127.0.0.1:{proxy_port}/oauth2/callback",
                "caConfigMapRef": {"name": "dex-ca", "key": "ca.crt"},
            }},
        },
    }


def rendered_pod(doc: dict) -> dict:
    ts = load_trackingserver(doc)
    deployment = next(m for m in render(ts) if m["kind"] == "Deployment")
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def local_proxy_args(args: list[str], port: int, server_port: int, ca_file: Path) -> list[str]:
    """The rendered arguments with the pod's addresses mapped to this machine's loopback."""
    mapping = {
        "--http-address=0.0.0.0:5000": f"--http-address=127.0.0.1:{port}",
        f"--upstream={oidc_render.upstream()}": f"--upstream=http://127.0.0.1:{server_port}/",
        f"--provider-ca-file={oidc_render.CA_DIR}/{oidc_render.CA_FILE}": f"--provider-ca-file={ca_file}",
    }
    assert set(mapping) <= set(args), f"the rendered sidecar changed: {args}"
    return [mapping.get(a, a) for a in args]


def secret_env(container: dict, secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    env = {}
    for e in container["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            env[e["name"]] = secrets[(ref["name"], ref["key"])]
        elif "value" in e:
            env[e["name"]] = e["value"]
    return env


class Stack:
    def __init__(self, tmp: Path, server_venv, postgres, template: str):
        self.tmp = tmp
        self.ports = [free_port(), free_port()]
        self.client = DexClient("mlflow", CLIENT_SECRET,
                                [f"http://127.0.0.1:{p}/oauth2/callback" for p in self.ports])
        self.dex = Dex(tmp / "dex", [ALICE, BOB, MALLORY], [self.client, OTHER], ID_TOKEN_SECONDS).start()
        doc = trackingserver(self.ports[0])
        doc["spec"]["auth"]["oidc"]["issuerUrl"] = self.dex.issuer
        self.containers = rendered_pod(doc)
        self.cookie_secret = base64.urlsafe_b64encode(bytes(range(32))).decode()
        self.secrets = {("sso-client", "secret"): CLIENT_SECRET, ("sso-oidc", "cookie-secret"): self.cookie_secret}
        db_uri = postgres.create_database(template=template)
        artifacts = tmp / "artifacts"
        artifacts.mkdir()
        self.servers, self.proxies = [], []
        for i, port in enumerate(self.ports):
            env = secret_env(self.containers["mlflow"], {**self.secrets, ("db", "uri"): db_uri})
            env.pop("MLFLOW_OPERATOR_POD_IPS", None)
            assert env["MLFLOW_OPERATOR_HOST"] == "127.0.0.1" and env["MLFLOW_OPERATOR_AUTH"] == "oidc", env
            env.update({"MLFLOW_OPERATOR_ARTIFACTS_DESTINATION": str(artifacts), "MLFLOW_OPERATOR_WORKERS": "1"})
            env.pop("MLFLOW_OPERATOR_PORT")
            env.pop("MLFLOW_OPERATOR_SCRATCH_DIR")
            self.servers.append(start_entrypoint(server_venv, env, tmp / f"server-{i}", name=f"server-{i}"))
            self.proxies.append(self.proxy(port, self.servers[-1].port, self.cookie_secret, f"proxy-{i}"))
        self.expired_token = self.token(ALICE)  # used by the last test, once it has expired

    def proxy(self, port: int, server_port: int, cookie_secret: str, name: str) -> OAuth2Proxy:
        sidecar = self.containers["oauth2-proxy"]
        env = secret_env(sidecar, {**self.secrets, ("sso-oidc", "cookie-secret"): cookie_secret})
        args = local_proxy_args(sidecar["args"], port, server_port, self.dex.ca_file)
        return OAuth2Proxy(args, env, self.tmp / name, port, name).start()

    def token(self, user: DexUser, client: DexClient | None = None) -> str:
        return self.dex.password_token(user, client or self.client)

    def url(self, i: int = 0) -> str:
        return self.proxies[i].url

    def logs(self) -> str:
        return "\n".join(p.output() for p in self.proxies) + "\n".join(s.output() for s in self.servers)

    def stop(self) -> None:
        for p in self.proxies:
            p.stop()
        for s in self.servers:
            s.stop()
        self.dex.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, server_venv, postgres, _migrated_template):
    try:
        s = Stack(tmp_path_factory.mktemp("oidc"), server_venv, postgres, _migrated_template)
    except ServiceError as e:
        pytest.fail(f"the OIDC stack could not be started: {e}", pytrace=False)
    s.tokens_seen = []
    yield s
    s.stop()


def sign_in(session: requests.Session, stack: Stack, user: DexUser, i: int = 0) -> requests.Response:
    """The browser's sign-in, by HTTP: the proxy sends us to Dex, Dex's password form, back to
    the proxy's callback, which sets the session cookie and sends us home."""
    r = session.get(stack.url(i) + "/", allow_redirects=True, verify=str(stack.dex.ca_file), timeout=60)
    assert "/dex/auth/local/login" in r.url, (r.status_code, r.url)
    return session.post(r.url, data={"login": user.email, "password": user.password}, allow_redirects=True,
                        verify=str(stack.dex.ca_file), timeout=60)


def test_no_token_gets_401_and_a_browser_is_sent_to_the_provider(stack):
    r = requests.get(stack.url() + API, timeout=30)
    assert r.status_code == 401, (r.status_code, r.text[:300])
    page = requests.get(stack.url() + "/", allow_redirects=False, timeout=30)
    assert page.status_code == 302 and page.headers["Location"].startswith(stack.dex.issuer + "/auth?"), page.headers
    # the kubelet's probes pass through to the server without a session
    assert requests.get(stack.url() + "/health", timeout=30).status_code == 200
    assert requests.get(stack.url() + "/readyz", timeout=30).status_code == 200


def test_forged_other_client_and_garbage_tokens_get_401(stack):
    token = stack.token(ALICE)
    stack.tokens_seen.append(token)
    assert requests.get(stack.url() + API, headers=bearer(token), timeout=30).status_code == 200
    for name, bad in (("forged", forged(token)), ("other client", stack.token(ALICE, OTHER)), ("garbage", "not.a.jwt")):
        r = requests.get(stack.url() + API, headers=bearer(bad), timeout=30)
        assert r.status_code == 401, (name, r.status_code, r.text[:300])


def test_a_user_outside_the_allowed_groups_gets_403(stack):
    token = stack.token(MALLORY)
    stack.tokens_seen.append(token)
    r = requests.get(stack.url() + API, headers=bearer(token), timeout=30)
    assert r.status_code == 403, (r.status_code, r.text[:300])


def test_a_client_with_a_token_logs_the_seed_tutorial(stack, client):
    token = stack.token(ALICE)
    stack.tokens_seen.append(token)
    out = last_json(client(TUTORIAL, tutorial_env(stack.url(), EXPERIMENT="sso-tutorial", MLFLOW_TRACKING_TOKEN=token),
                           timeout=900).stdout)
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out
    stack.tutorial = out
    # read back through the other replica with the same token
    r = requests.get(stack.url(1) + f"/api/2.0/mlflow/runs/get?run_id={out['run_id']}", headers=bearer(token), timeout=30)
    assert r.status_code == 200 and r.json()["run"]["info"]["run_id"] == out["run_id"], r.text[:300]
    # and without one, the artifact itself is refused
    listing = requests.get(stack.url(1) + "/api/2.0/mlflow-artifacts/artifacts", timeout=30)
    assert listing.status_code == 401, listing.status_code


def test_only_the_admin_group_deletes(stack):
    alice, bob = stack.token(ALICE), stack.token(BOB)
    stack.tokens_seen += [alice, bob]
    created = requests.post(stack.url() + "/api/2.0/mlflow/experiments/create", json={"name": "to-delete"},
                            headers=bearer(alice), timeout=30)
    assert created.status_code == 200, created.text[:300]
    exp = {"experiment_id": created.json()["experiment_id"]}
    denied = requests.post(stack.url() + "/api/2.0/mlflow/experiments/delete", json=exp, headers=bearer(alice), timeout=30)
    assert denied.status_code == 403 and "ml-admins" in denied.text, (denied.status_code, denied.text[:300])
    # a client's own groups header is replaced by the proxy's
    spoofed = requests.post(stack.url() + "/api/2.0/mlflow/experiments/delete", json=exp, timeout=30,
                            headers={**bearer(alice), "X-Forwarded-Groups": "ml-admins", "X-Forwarded-User": "bob"})
    assert spoofed.status_code == 403, (spoofed.status_code, spoofed.text[:300])
    done = requests.post(stack.url(1) + "/api/2.0/mlflow/experiments/delete", json=exp, headers=bearer(bob), timeout=30)
    assert done.status_code == 200, (done.status_code, done.text[:300])


def test_a_session_signed_in_on_one_replica_is_valid_on_the_other(stack):
    session = requests.Session()
    home = sign_in(session, stack, ALICE, 0)
    assert home.status_code == 200 and home.url.rstrip("/") == stack.url(0), (home.status_code, home.url)
    assert "mlflow" in home.text.lower()
    cookies = [c.name for c in session.cookies]
    assert "_mlflow_sso" in cookies, cookies
    # cookies are per host, not per port: the same browser talks to replica 1 now
    for i in (0, 1):
        r = session.get(stack.url(i) + "/ajax-api/2.0/mlflow/experiments/search?max_results=5", timeout=30)
        assert r.status_code == 200, (i, r.status_code, r.text[:300])
    # a proxy with another cookie secret cannot read that session
    stranger = stack.proxy(free_port(), stack.servers[0].port, base64.urlsafe_b64encode(b"x" * 32).decode(), "stranger")
    try:
        r = session.get(stranger.url + API, timeout=30)
        assert r.status_code == 401, r.status_code
    finally:
        stranger.stop()
    # a signed-in user outside the allowed groups: 403 at the callback
    other = requests.Session()
    r = sign_in(other, stack, MALLORY, 1)
    assert r.status_code == 403, (r.status_code, r.url)


def test_chromium_signs_in_to_the_ui_at_the_provider(stack, tmp_path):
    out = getattr(stack, "tutorial", None)
    assert out, "the tutorial test did not run first"
    cert = stack.dex.tls.cert.read_text()
    browser = Browser(tmp_path, [f"--ignore-certificate-errors-spki-list={spki_sha256(cert)}"])
    try:
        browser_signs_in(browser, stack.url(1) + "/#/experiments", ALICE)
        home = browser.open(stack.url(1) + "/#/experiments", "sso-tutorial", timeout=180)
        assert "Experiments" in home, home[:1000]
        runs = browser.open(stack.url(0) + f"/#/experiments/{out['experiment_id']}/runs", "Run Name", timeout=180)
        browser.screenshot(ARTIFACTS_DIR / "ui-oidc-runs.png")
    finally:
        browser.close()
    assert "sso-tutorial" in runs or "Run Name" in runs


def test_an_expired_token_gets_401_and_no_secret_is_logged(stack):
    claims = json.loads(base64.urlsafe_b64decode(stack.expired_token.split(".")[1] + "=="))
    wait = claims["exp"] - time.time() + 2
    assert wait < ID_TOKEN_SECONDS + 5, wait
    if wait > 0:
        time.sleep(wait)
    r = requests.get(stack.url() + API, headers=bearer(stack.expired_token), timeout=30)
    assert r.status_code == 401, (r.status_code, r.text[:300])

    logs = stack.logs()
    assert "AuthSuccess" in logs or "Authenticated" in logs or "127.0.0.1" in logs, logs[-2000:]
    values = {"client secret": CLIENT_SECRET, "cookie secret": stack.cookie_secret, "alice's password": ALICE.password,
              "bob's password": BOB.password, "expired token": stack.expired_token}
    values.update({f"token {i}": t for i, t in enumerate(stack.tokens_seen)})
    for name, value in values.items():
        assert value not in logs, f"the {name} is in a log"
        assert value[-24:] not in logs, f"the end of the {name} is in a log"
    assert "code=" not in logs, "the sign-in's authorization code is in a log"


def test_the_servers_exec_probe_asks_its_loopback_port(stack, server_venv):
    server = stack.servers[0]
    env = {"PATH": "/usr/bin:/bin", "MLFLOW_OPERATOR_HOST": "127.0.0.1", "MLFLOW_OPERATOR_PORT": str(server.port)}
    ok = subprocess.run([str(server_venv.bin("mlflow-entrypoint")), "probe", "/health"], env=env,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    env["MLFLOW_OPERATOR_PORT"] = str(free_port())  # nothing listens there
    down = subprocess.run([str(server_venv.bin("mlflow-entrypoint")), "probe", "/health"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 1 and "probe: /health" in down.stderr, (down.returncode, down.stderr)


def test_the_entrypoint_refuses_oidc_on_an_address_other_than_loopback(entrypoint, migrated_pg_uri, tmp_path):
    res = entrypoint("serve", {"MLFLOW_OPERATOR_BACKEND_STORE_URI": migrated_pg_uri, "MLFLOW_OPERATOR_AUTH": "oidc",
                               "MLFLOW_OPERATOR_HOST": "0.0.0.0", "MLFLOW_OPERATOR_ARTIFACTS_DESTINATION": str(tmp_path)})
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "MLFLOW_OPERATOR_AUTH=oidc needs MLFLOW_OPERATOR_HOST=127.0.0.1" in res.stderr, res.stderr
