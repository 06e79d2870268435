"""spec.auth.type OIDC on the real node: the oauth2-proxy sidecar in real pods in front of the server
on the pod's loopback, signing users in at a real provider.

Dex (hack/testservices/oidc.py, built from its Go module) runs on this machine's loopback with TLS
from its own test CA and is reached by pods as https://dex.<namespace>.svc:<port>/dex (a Service
and an EndpointSlice relayed to that port, tests/node/reach.py); the browser reaches the same name
(Chromium's host-resolver rules), so the issuer is one URL for everyone. The CA reaches the sidecar
through spec.auth.oidc.caConfigMapRef. The sidecar's image is the oauth2-proxy binary built here
(hack/images, name oauth2-proxy) under a mirror's name, set as spec.auth.oidc.proxyImage.

Dex keeps its state in PostgreSQL (Dex's own `postgres` storage), so a second Dex on the same
storage and issuer (Dex's way of running highly available) signs with the same keys: that replica
issues ID tokens that live 30 s, for the expired-token check, while the first one's last the
test's whole length.

test_oidc_sign_in_tokens_groups_and_shared_sessions_on_real_pods: one TrackingServer, two replicas
on PostgreSQL, artifacts proxied to MinIO, an Ingress served by Traefik at
http://sso.<namespace>.example.test. Checked through the route: no token, a forged token, a token
Dex issued to another application (audience) and garbage get 401, a browser without a session is
sent to Dex; a user outside the allowed group gets 403; a client with an ID token
(MLFLOW_TRACKING_TOKEN) logs the seed tutorial; headless Chromium signs in at Dex and the UI shows
the tutorial's run. Then on each pod directly (kubectl port-forward to the pod): the browser's
session cookie, made by the pod that served the sign-in's callback, is accepted by both pods. A
30-second token, accepted at first, gets 401 once it has expired. No secret, password or token
in the pods' logs.

test_oidc_split_mode_closes_every_artifact_route_on_real_pods: artifacts.mode Split, so the
artifacts pods (their own Deployment and Service, the Ingress's artifact paths) get the sidecar
too. Every artifact route (upload, download, list, delete, multipart create, complete and abort,
under both prefixes) refuses anonymous requests with 401 through the route (served by the artifacts
pods, by Traefik's access log) and on the artifacts Service from inside the cluster (a tracking
pod, by the Service's name), and nothing reaches the bucket; past the sidecar nothing listens on
the pod IP. An allowed user's token uploads, downloads and lists, a delete needs the admin group;
the seed tutorial with a token through the route, and the UI's get-artifact through the tracking
pods, which call the artifacts pods with the operator's generated credential. No secret in logs.
"""
from __future__ import annotations

import json
import time
import uuid

import requests

import pytest

from testservices import REPO
from testservices.oidc import Dex, DexClient
from tests.browser import Browser, spki_sha256
from tests.operator_fixtures import wait_for
from tests.oidc import (ADMIN_GROUP, ALICE, ALLOWED_GROUP, ARTIFACT_APIS, BOB, CLIENT_SECRET, MALLORY, OTHER,
                        artifact_requests, bearer, browser_signs_in, claims, dex_storage, forged, raw_request)
from tests.workload.server_env import TUTORIAL, last_json, tutorial_env

from .conftest import load_test_image
from .ingress_client import DOMAIN, backend_ip, client_script, pod_ips, request, served, wait_routed

pytestmark = [pytest.mark.node, pytest.mark.timeout(1800)]

NAME = "sso"
SPLIT = "sso-split"
API = "/api/2.0/mlflow/experiments/search?max_results=10"
AJAX = "/ajax-api/2.0/mlflow/experiments/search?max_results=10"
ARTIFACTS_DIR = REPO / "test-artifacts" / "node"
# Long enough for the tutorial on a loaded 2-core machine (the proxy checks expiry).
ID_TOKEN_SECONDS = 1800
# The replica's tokens: long enough to be accepted once right after they are issued, short enough
# to have expired by the end of the test without waiting (the tutorial and the browser's sign-in
# alone took 34 s at load 4-7; with 60 s the test waited 25 s).
EXPIRING_SECONDS = 30


@pytest.fixture(scope="module")
def proxy_image(node_cluster, node_images, request):
    """The oauth2-proxy image, on the node."""
    return load_test_image(node_cluster, request, "oauth2-proxy", "the oauth2-proxy image")


@pytest.fixture
def dex(real, tmp_path):
    """Dex with ALICE, BOB and MALLORY, its issuer named for pods and browsers alike, its state in
    PostgreSQL; the client `mlflow` (both tests' servers) and another application's (OTHER)."""
    callbacks = [f"http://{name}.{real.namespace}.{DOMAIN}/oauth2/callback" for name in (NAME, SPLIT)]
    client = DexClient("mlflow", CLIENT_SECRET, callbacks)
    storage = dex_storage(real.postgres, f"dex_{uuid.uuid4().hex[:12]}")
    provider = Dex(tmp_path / "dex", [ALICE, BOB, MALLORY], [client, OTHER], ID_TOKEN_SECONDS,
                   public_host=f"dex.{real.namespace}.svc", storage=storage).start()
    provider.client = client
    real.expose("dex", provider.port, provider.port)
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def expiring_dex(dex, tmp_path):
    """A second Dex on the first one's storage and issuer: the same signing keys, ID tokens that
    live EXPIRING_SECONDS. Only this test process asks it for tokens."""
    replica = dex.replica(tmp_path / "dex-replica", EXPIRING_SECONDS).start()
    try:
        yield replica
    finally:
        replica.stop()


def oidc_auth(dex, proxy_image) -> dict:
    return {"type": "OIDC", "oidc": {
        "issuerUrl": dex.issuer, "clientId": dex.client.id,
        "clientSecret": {"secretKeyRef": {"name": "sso-client", "key": "secret"}},
        "allowedGroups": [ALLOWED_GROUP], "adminGroup": ADMIN_GROUP,
        "caConfigMapRef": {"name": "dex-ca", "key": "ca.crt"},
        "proxyImage": proxy_image.ref,
    }}


def trackingserver(real, node_ingress, dex, proxy_image, host: str, name: str = NAME, replicas: int = 2,
                   mode: str = "Proxied") -> dict:
    bucket = real.bucket(f"{name}-{real.namespace}"[:63].rstrip("-"))
    real.secret(f"{name}-db", {"uri": real.database(name.replace("-", "_"))})
    real.s3_secret(f"{name}-s3")
    real.secret("sso-client", {"secret": CLIENT_SECRET})
    real.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dex-ca", "namespace": real.namespace},
                "data": {"ca.crt": dex.ca_file.read_text()}})
    artifacts = {"mode": mode, "destination": f"s3://{bucket}/{name}", "s3": {
        "endpointUrl": real.s3_endpoint(), "region": real.s3.region,
        "accessKeyId": {"secretKeyRef": {"name": f"{name}-s3", "key": "access-key-id"}},
        "secretAccessKey": {"secretKeyRef": {"name": f"{name}-s3", "key": "secret-access-key"}}}}
    if mode == "Split":
        artifacts["replicas"] = 1
    return {
        "apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
        "metadata": {"name": name, "namespace": real.namespace},
        "spec": {
            "replicas": replicas,
            "backendStore": {"type": "Database", "uri": {"secretKeyRef": {"name": f"{name}-db", "key": "uri"}}},
            "artifacts": artifacts,
            "ingress": {"className": node_ingress.ingress_class, "hosts": [host]},
            "auth": oidc_auth(dex, proxy_image),
        },
    }


def test_oidc_sign_in_tokens_groups_and_shared_sessions_on_real_pods(real, node_ingress, proxy_image, dex, expiring_dex,
                                                                    tmp_path):
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
    # A token of the replica, which lives a minute: accepted now (the same keys and issuer), refused
    # below once it has expired.
    expiring = expiring_dex.password_token(ALICE, dex.client)
    lifetime = claims(expiring)
    assert lifetime["exp"] - lifetime["iat"] == EXPIRING_SECONDS and lifetime["iss"] == dex.issuer, lifetime
    alice = dex.password_token(ALICE, dex.client)
    other_app = dex.password_token(ALICE, OTHER)
    assert claims(other_app)["aud"] == OTHER.id and claims(other_app)["iss"] == dex.issuer, claims(other_app)
    for name, token, wanted in (("alice, from the replica, before it expires", expiring, 200), ("alice", alice, 200),
                                ("forged", forged(alice), 401), ("garbage", "not.a.jwt", 401),
                                ("alice's, issued to another application", other_app, 401),
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

    # The replica's token, accepted at the start, once it has expired (minutes later: rarely a wait).
    wait = claims(expiring)["exp"] - time.time() + 2
    assert wait < EXPIRING_SECONDS + 5, wait
    real.timings["waited for expiry"] = round(max(wait, 0), 1)
    if wait > 0:
        time.sleep(wait)
    expired = request(node_ingress, host, "GET", API, headers=bearer(expiring))
    assert expired.status == 401, str(expired)

    logs = "\n".join(real.kubectl("logs", "-n", real.namespace, p["metadata"]["name"], "--all-containers",
                                  check=False).stdout for p in pods)
    # the sidecars' request log is in there (it names the user), so its absence of secrets means something
    assert ALICE.email in logs, logs[-2000:]
    for what, value in (("client secret", CLIENT_SECRET), ("alice's password", ALICE.password), ("token", alice),
                        ("expired token", expiring), ("other application's token", other_app),
                        ("session cookie", next(iter(session.values())))):
        assert value not in logs and value[-24:] not in logs, f"the {what} is in a pod's log"


# From inside a tracking pod (python3 of the server image): each request to the artifacts Service
# by its name, without credentials unless one is asked for (`auth`: a bearer token from stdin, or
# the pod's own generated credential from its environment); redirects are answers, not followed.
# Then plain connections: the artifacts pod's IP at the sidecar's port and at the server's.
IN_CLUSTER = r"""
import base64, json, os, socket, sys, urllib.error, urllib.request
asked = json.load(sys.stdin)


class Answer(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


opener = urllib.request.build_opener(Answer)
out = []
for r in asked["requests"]:
    headers = dict(r["headers"])
    if r.get("auth") == "token":
        headers["Authorization"] = "Bearer " + asked["token"]
    elif r.get("auth") == "own credential":
        pair = os.environ["MLFLOW_TRACKING_USERNAME"] + ":" + os.environ["MLFLOW_TRACKING_PASSWORD"]
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    body = None if r["body"] is None else r["body"].encode("latin-1")
    req = urllib.request.Request(asked["base"] + r["path"], data=body, method=r["method"], headers=headers)
    try:
        with opener.open(req, timeout=30) as resp:
            out.append(resp.status)
    except urllib.error.HTTPError as e:
        out.append(e.code)
connects = []
for address in asked["connect"]:
    try:
        socket.create_connection(tuple(address), timeout=10).close()
        connects.append("connected")
    except OSError as e:
        connects.append(type(e).__name__)
print(json.dumps({"statuses": out, "connects": connects}))
"""


def logged(node_ingress, host: str, what: str, count: int, *prefixes: str, method: str | None = None) -> list[dict]:
    """Traefik's access-log lines for `host` under `prefixes`, once there are at least `count` (a
    line is written a moment after its answer)."""
    def found():
        entries = [e for prefix in prefixes for e in served(node_ingress, host, prefix, method)]
        return entries if len(entries) >= count else None

    return wait_for(f"{count} {what} in Traefik's access log", found, timeout=30, interval=1)


def test_oidc_split_mode_closes_every_artifact_route_on_real_pods(real, node_ingress, proxy_image, dex):
    host = f"{SPLIT}.{real.namespace}.{DOMAIN}"
    ts = trackingserver(real, node_ingress, dex, proxy_image, host, name=SPLIT, replicas=1, mode="Split")
    bucket = ts["spec"]["artifacts"]["destination"].split("/")[2]
    real.apply(ts)
    real.timed("ready", lambda: real.wait_ready(SPLIT, timeout=900, MigrationsApplied="True"))
    tracking = real.timed("pods ready", lambda: real.wait_pods(SPLIT, 1, "tracking"))[0]
    artifacts = real.wait_pods(SPLIT, 1, "artifacts")[0]
    for pod in (tracking, artifacts):
        containers = {c["name"]: c for c in pod["spec"]["containers"]}
        assert containers["oauth2-proxy"]["image"] == proxy_image.ref, containers["oauth2-proxy"]["image"]
        env = {e["name"]: e.get("value") for e in containers["mlflow"]["env"]}
        assert env["MLFLOW_OPERATOR_HOST"] == "127.0.0.1", (pod["metadata"]["name"], env)
    artifacts_ip = artifacts["status"]["podIP"]
    assert pod_ips(real, SPLIT, "artifacts") == {artifacts_ip}
    real.timed("routed", lambda: wait_routed(node_ingress, host))
    alice = dex.password_token(ALICE, dex.client)

    # Anonymous: every artifact route, through the route and on the artifacts Service in the cluster.
    routes = [(method, *raw_request(path, kw)) for api in ARTIFACT_APIS for method, path, kw in artifact_requests(api)]
    seen = []
    for method, path, body, headers in routes:
        got = request(node_ingress, host, method, path, body, headers=headers)
        seen.append(("route", method, path, got.status))
    checks = [{"method": m, "path": p, "body": None if b is None else b.decode("latin-1"), "headers": h}
              for m, p, b, h in routes]
    listing = f"{ARTIFACT_APIS[0]}/artifacts?path="
    checks += [{"method": "GET", "path": listing, "body": None, "headers": {}, "auth": "token"},
               {"method": "GET", "path": listing, "body": None, "headers": {}, "auth": "own credential"}]
    inside = json.loads(real.kubectl(
        "exec", "-i", "-n", real.namespace, tracking["metadata"]["name"], "-c", "mlflow", "--", "python3", "-c", IN_CLUSTER,
        input=json.dumps({"base": f"http://{SPLIT}-artifacts.{real.namespace}.svc:5000", "requests": checks,
                          "token": alice, "connect": [[artifacts_ip, 5000], [artifacts_ip, 5001]]})
                         ).stdout.strip().splitlines()[-1])
    *anonymous, with_token, with_credential = inside["statuses"]
    seen += [("artifacts Service", m, p, status) for (m, p, _, _), status in zip(routes, anonymous)]
    assert len(seen) == 28 and [s for s in seen if s[3] != 401] == [], seen
    # the Service answers past its sidecar for a user's token and for the tracking pods' credential
    assert (with_token, with_credential) == (200, 200), inside
    # the sidecar's port answers on the pod IP, the server's does not (it listens on the pod's loopback)
    assert inside["connects"] == ["connected", "ConnectionRefusedError"], inside
    assert real.s3_keys(bucket) == [], "an anonymous request stored something"
    # the anonymous requests through the route were refused by the artifacts pods' sidecar
    through_route = logged(node_ingress, host, "anonymous artifact requests", 14, *(api + "/" for api in ARTIFACT_APIS))
    assert len(through_route) == 14 and {backend_ip(e) for e in through_route} == {artifacts_ip}, through_route

    # A signed-in user's token: upload, download, list; deleting needs the admin group.
    path = f"{ARTIFACT_APIS[0]}/artifacts/alice/notes.txt"
    assert request(node_ingress, host, "PUT", path, b"hello from alice", headers=bearer(alice)).status == 200
    assert real.s3_keys(bucket, f"{SPLIT}/alice/") == [f"{SPLIT}/alice/notes.txt"]
    got = request(node_ingress, host, "GET", path, headers=bearer(alice))
    assert got.status == 200 and got.body == b"hello from alice", str(got)
    listed = request(node_ingress, host, "GET", f"{ARTIFACT_APIS[0]}/artifacts?path=alice", headers=bearer(alice))
    assert listed.status == 200 and [f["path"] for f in json.loads(listed.body)["files"]] == ["notes.txt"], str(listed)
    assert request(node_ingress, host, "GET", path, headers=bearer(dex.password_token(MALLORY, dex.client))).status == 403
    assert request(node_ingress, host, "DELETE", path, headers=bearer(alice)).status == 403
    bob = dex.password_token(BOB, dex.client)
    assert request(node_ingress, host, "DELETE", path, headers=bearer(bob)).status == 200
    assert real.s3_keys(bucket, f"{SPLIT}/alice/") == []

    # The seed tutorial with a token through the route; its artifacts went to the artifacts pods.
    out = real.timed("tutorial", lambda: last_json(real.client(client_script(node_ingress, TUTORIAL), tutorial_env(
        f"http://{host}", EXPERIMENT="sso-split-tutorial", MLFLOW_TRACKING_TOKEN=alice)).stdout))
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out
    uploads = logged(node_ingress, host, "uploads (alice's and the tutorial's)", 2, ARTIFACT_APIS[0] + "/", method="PUT")
    assert {backend_ip(e) for e in uploads} == {artifacts_ip}, uploads
    assert any(k.endswith("/artifacts/notes/notes.txt") for k in real.s3_keys(bucket, f"{SPLIT}/")), real.s3_keys(bucket)
    # the UI's download asks the tracking pods, which fetch it from the artifacts pods with their credential
    ui = request(node_ingress, host, "GET", f"/get-artifact?path=notes/notes.txt&run_uuid={out['run_id']}",
                 headers=bearer(alice))
    assert ui.status == 200 and ui.body == b"hello from the tutorial\n", str(ui)
    ui_served = logged(node_ingress, host, "get-artifact requests", 1, "/get-artifact")
    assert backend_ip(ui_served[-1]) == tracking["status"]["podIP"], ui_served

    logs = "\n".join(real.kubectl("logs", "-n", real.namespace, p["metadata"]["name"], "--all-containers",
                                  check=False).stdout for p in (tracking, artifacts))
    assert ALICE.email in logs, logs[-2000:]  # the sidecars' request logs are in there
    internal = real.secret_value(f"{SPLIT}-oidc-internal", "password")
    cookie_secret = real.secret_value(f"{SPLIT}-oidc", "cookie-secret")
    for what, value in (("client secret", CLIENT_SECRET), ("internal password", internal), ("cookie secret", cookie_secret),
                        ("token", alice), ("admin's token", bob)):
        assert value not in logs and value[-24:] not in logs, f"the {what} is in a pod's log"
