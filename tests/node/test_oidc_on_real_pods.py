"""spec.auth.type OIDC on the real node: the oauth2-proxy sidecar in real pods in front of the server
on the pod's loopback, signing users in at a real provider.

Dex (hack/testservices/oidc.py, built from its Go module) runs on this machine's loopback with TLS
from its own test CA and is reached by pods as https://dex.<namespace>.svc:<port>/dex (a Service
and an EndpointSlice relayed to that port, tests/node/reach.py); the browser reaches the same name
(Chromium's host-resolver rules), so the issuer is one URL for everyone. The CA reaches the sidecar
through spec.auth.oidc.caConfigMapRef. The sidecar's image is the oauth2-proxy binary built here
(hack/images, name oauth2-proxy) under a mirror's name, set as spec.auth.oidc.proxyImage.

One TrackingServer: two replicas on PostgreSQL, artifacts proxied to MinIO, an Ingress served by
Traefik at http://sso.<namespace>.example.test. Checked through the route: no token and a forged
token get 401, a browser without a session is sent to Dex; a user outside the allowed group gets
403; a client with an ID token (MLFLOW_TRACKING_TOKEN) logs the seed tutorial; headless Chromium
signs in at Dex and the UI shows the tutorial's run. Then on each pod directly (kubectl
port-forward to the pod): the browser's session cookie, made by the pod that served the sign-in's
callback, is accepted by both pods. No secret, password or token in the pods' logs.
"""
from __future__ import annotations

import requests

import pytest

from testservices import REPO
from testservices.oidc import Dex, DexClient
from tests.browser import Browser, spki_sha256
from tests.oidc import ADMIN_GROUP, ALICE, ALLOWED_GROUP, BOB, CLIENT_SECRET, MALLORY, bearer, browser_signs_in, forged
from tests.workload.server_env import TUTORIAL, last_json, tutorial_env

from .conftest import load_test_image
from .ingress_client import DOMAIN, backend_ip, client_script, request, served, wait_routed

pytestmark = [pytest.mark.node, pytest.mark.timeout(1800)]

NAME = "sso"
API = "/api/2.0/mlflow/experiments/search?max_results=10"
AJAX = "/ajax-api/2.0/mlflow/experiments/search?max_results=10"
ARTIFACTS_DIR = REPO / "test-artifacts" / "node"
# Long enough for the tutorial on a loaded 2-core machine (the proxy checks expiry).
ID_TOKEN_SECONDS = 1800


@pytest.fixture(scope="module")
def proxy_image(node_cluster, node_images, request):
    """The oauth2-proxy image, on the node."""
    return load_test_image(node_cluster, request, "oauth2-proxy", "the oauth2-proxy image")


@pytest.fixture
def dex(real, tmp_path):
    """Dex with ALICE, BOB and MALLORY, its issuer named for pods and browsers alike."""
    host = f"{NAME}.{real.namespace}.{DOMAIN}"
    client = DexClient("mlflow", CLIENT_SECRET, [f"http://{host}/oauth2/callback"])
    provider = Dex(tmp_path / "dex", [ALICE, BOB, MALLORY], [client], ID_TOKEN_SECONDS,
                   public_host=f"dex.{real.namespace}.svc").start()
    provider.client = client
    real.expose("dex", provider.port, provider.port)
    try:
        yield provider
    finally:
        provider.stop()


def trackingserver(real, node_ingress, dex, proxy_image, host: str) -> dict:
    bucket = real.bucket("sso-artifacts")
    real.secret("sso-db", {"uri": real.database(NAME)})
    real.s3_secret("sso-s3")
    real.secret("sso-client", {"secret": CLIENT_SECRET})
    real.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dex-ca", "namespace": real.namespace},
                "data": {"ca.crt": dex.ca_file.read_text()}})
    return {
        "apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
        "metadata": {"name": NAME, "namespace": real.namespace},
        "spec": {
            "replicas": 2,
            "backendStore": {"type": "Database", "uri": {"secretKeyRef": {"name": "sso-db", "key": "uri"}}},
            "artifacts": {"mode": "Proxied", "destination": f"s3://{bucket}/sso", "s3": {
                "endpointUrl": real.s3_endpoint(), "region": real.s3.region,
                "accessKeyId": {"secretKeyRef": {"name": "sso-s3", "key": "access-key-id"}},
                "secretAccessKey": {"secretKeyRef": {"name": "sso-s3", "key": "secret-access-key"}}}},
            "ingress": {"className": node_ingress.ingress_class, "hosts": [host]},
            "auth": {"type": "OIDC", "oidc": {
                "issuerUrl": dex.issuer, "clientId": dex.client.id,
                "clientSecret": {"secretKeyRef": {"name": "sso-client", "key": "secret"}},
                "allowedGroups": [ALLOWED_GROUP], "adminGroup": ADMIN_GROUP,
                "caConfigMapRef": {"name": "dex-ca", "key": "ca.crt"},
                "proxyImage": proxy_image.ref,
            }},
        },
    }


def test_oidc_sign_in_tokens_groups_and_shared_sessions_on_real_pods(real, node_ingress, proxy_image, dex, tmp_path):
    host = f"{NAME}.{real.namespace}.{DOMAIN}"
    real.apply(trackingserver(real, node_ingress, dex, proxy_image, host))
    real.timed("ready", lambda: real.wait_ready(NAME, MigrationsApplied="True"))
    pods = real.timed("2 pods ready", lambda: real.wait_pods(NAME, 2))
    for pod in pods:
        sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "oauth2-proxy")
        assert sidecar["image"] == proxy_image.ref, sidecar["image"]
    real.timed("routed", lambda: wait_routed(node_ingress, host))  # /health: a probe route, no session

    # Through the route: who is refused, and how.
    anonymous = request(node_ingress, host, "GET", API)
    assert anonymous.status == 401, anonymous
    page = request(node_ingress, host, "GET", "/")
    assert page.status == 302 and page.headers["location"].startswith(dex.issuer + "/auth?"), page
    alice = dex.password_token(ALICE, dex.client)
    for name, token, wanted in (("alice", alice, 200), ("forged", forged(alice), 401), ("garbage", "not.a.jwt", 401),
                                ("mallory, outside the allowed group", dex.password_token(MALLORY, dex.client), 403)):
        got = request(node_ingress, host, "GET", API, headers=bearer(token))
        assert got.status == wanted, (name, str(got))

    # The stock client with a token, through the route.
    out = real.timed("tutorial", lambda: last_json(real.client(client_script(node_ingress, TUTORIAL), tutorial_env(
        f"http://{host}", EXPERIMENT="sso-tutorial", MLFLOW_TRACKING_TOKEN=alice)).stdout))
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out

    # Chromium signs in at Dex through the route and the UI shows the tutorial's run.
    cert = dex.tls.cert.read_text()
    browser = Browser(tmp_path, [
        f"--host-resolver-rules=MAP {host} 127.0.0.1:{node_ingress.port}, MAP {dex.public_host} 127.0.0.1",
        f"--ignore-certificate-errors-spki-list={spki_sha256(cert)}",
        "--disable-features=HttpsUpgrades"])  # http://<host> as typed: Traefik's web entry point
    try:
        real.timed("ui: sign-in", lambda: browser_signs_in(browser, f"http://{host}/#/experiments", ALICE))
        runs = real.timed("ui: the tutorial run", lambda: browser.open(
            f"http://{host}/#/experiments/{out['experiment_id']}/runs", "Run Name", timeout=180))
        browser.screenshot(ARTIFACTS_DIR / "ui-oidc-real-pods.png")
        cookies = browser.call("Network.getCookies", urls=[f"http://{host}/"])["cookies"]
    finally:
        browser.close()
    assert "Run Name" in runs, runs[:1000]
    session = {c["name"]: c["value"] for c in cookies if c["name"].startswith(f"_mlflow_{NAME}")}
    assert session, [c["name"] for c in cookies]

    # The session cookie was made by the pod that served the callback; both pods accept it.
    callbacks = served(node_ingress, host, "/oauth2/callback")
    assert callbacks, node_ingress.access_log()[-5:]
    minted_by = backend_ip(callbacks[-1])
    answers = {}
    for pod in pods:
        forward = real.port_forward_to_pod(pod["metadata"]["name"], 5000)
        with_cookie = requests.get(forward.url + AJAX, cookies=session, timeout=30)
        without = requests.get(forward.url + AJAX, timeout=30)
        answers[pod["status"]["podIP"]] = (with_cookie.status_code, without.status_code)
    assert minted_by in answers, (minted_by, answers)
    assert answers == {ip: (200, 401) for ip in answers}, answers

    # Only the admin group deletes (the server's check, from the groups the sidecar passes).
    bob = dex.password_token(BOB, dex.client)
    created = requests.post(f"http://127.0.0.1:{node_ingress.port}/api/2.0/mlflow/experiments/create",
                            json={"name": "to-delete"}, headers={**bearer(alice), "Host": host}, timeout=30)
    assert created.status_code == 200, created.text[:300]
    exp = {"experiment_id": created.json()["experiment_id"]}
    delete = f"http://127.0.0.1:{node_ingress.port}/api/2.0/mlflow/experiments/delete"
    assert requests.post(delete, json=exp, headers={**bearer(alice), "Host": host}, timeout=30).status_code == 403
    assert requests.post(delete, json=exp, headers={**bearer(bob), "Host": host}, timeout=30).status_code == 200

    logs = "\n".join(real.kubectl("logs", "-n", real.namespace, p["metadata"]["name"], "--all-containers",
                                  check=False).stdout for p in pods)
    # the sidecars' request log is in there (it names the user), so its absence of secrets means something
    assert ALICE.email in logs, logs[-2000:]
    for what, value in (("client secret", CLIENT_SECRET), ("alice's password", ALICE.password), ("token", alice),
                        ("session cookie", next(iter(session.values())))):
        assert value not in logs and value[-24:] not in logs, f"the {what} is in a pod's log"
