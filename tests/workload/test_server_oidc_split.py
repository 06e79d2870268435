"""auth.type OIDC with artifacts.mode Split at the workload tier: the artifacts pods get the same
sign-in sidecar, so no artifact route is open.

What runs: Dex (the real provider), a tracking server and an artifacts-only server on loopback,
each behind the oauth2-proxy sidecar exactly as the operator renders it for its Deployment (only
listen, upstream, CA and htpasswd paths mapped here), and NGINX as the Ingress's path rules route
(`/api/2.0/mlflow-artifacts/`, `/ajax-api/2.0/mlflow-artifacts/` to the artifacts pods, everything
else to the tracking pods). Checked: every artifact route (upload, download, list, delete,
multipart create/complete/abort, REST and ajax) refuses anonymous requests with 401, through the
route and directly on the artifacts pods' proxy (the Service's port), and an anonymous upload
stores nothing; a signed-in user's token uploads, downloads, lists; deleting needs the admin group
there too; the tracking pods' own calls to the artifacts pods carry the generated credential (the
UI's get-artifact through the tracking pods answers), a wrong one gets 401; the seed tutorial with a
token through the route; no secret in any log.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests

from mlflow_operator.api import load_trackingserver
from mlflow_operator.render import fresh_secret_values, render, required_generated_secrets
from mlflow_operator.render import oidc as oidc_render
from testservices import ServiceError
from testservices.mlflowproc import start_entrypoint
from testservices.nginx import ARTIFACT_PREFIXES, Nginx
from testservices.oidc import Dex, DexClient, OAuth2Proxy, free_port

from .server_env import last_json, tutorial_env
from .server_env import TUTORIAL
from tests.oidc import ARTIFACT_APIS, ALICE, BOB, CLIENT_SECRET, MALLORY, artifact_requests, bearer, browser_signs_in
from .test_server_oidc import local_proxy_args, secret_env

pytestmark = pytest.mark.timeout(1500)

ARTIFACTS_API = "/api/2.0/mlflow-artifacts"


def trackingserver(issuer: str, route_port: int) -> dict:
    return {
        "apiVersion": "mlflow-operator.dev/v1alpha1",
        "kind": "TrackingServer",
        "metadata": {"name": "split", "namespace": "ml"},
        "spec": {
            "backendStore": {"type": "Database", "uri": {"secretKeyRef": {"name": "db", "key": "uri"}}},
            "artifacts": {"mode": "Split", "destination": "s3://mlflow-artifacts/split"},
            "auth": {"type": "OIDC", "oidc": {
                "issuerUrl": issuer, "clientId": "mlflow",
                "clientSecret": {"secretKeyRef": {"name": "sso-client", "key": "secret"}},
                "allowedGroups": ["ml-team"], "adminGroup": "ml-admins",
                "redirectUrl": f"http://127.0.0.1:{route_port}/oauth2/callback",
                "caConfigMapRef": {"name": "dex-ca", "key": "ca.crt"},
            }},
        },
    }


class SplitStack:
    def __init__(self, tmp: Path, server_venv, postgres, template: str):
        self.tmp = tmp
        self.route_port_hint = free_port()
        self.client = DexClient("mlflow", CLIENT_SECRET, [])
        self.artifacts_dir = tmp / "store"
        self.artifacts_dir.mkdir()
        ports = {"tracking": free_port(), "artifacts": free_port()}
        # NGINX first (its port is the redirect URL), pointing at the proxies' ports
        routes = {prefix: ports["artifacts"] for prefix in ARTIFACT_PREFIXES}
        self.route = Nginx(ports["tracking"], routes)
        self.client = DexClient("mlflow", CLIENT_SECRET, [f"http://127.0.0.1:{self.route.port}/oauth2/callback"])
        self.dex = Dex(tmp / "dex", [ALICE, BOB, MALLORY], [self.client]).start()
        ts = load_trackingserver(trackingserver(self.dex.issuer, self.route.port))
        self.generated = {s.name: fresh_secret_values(s) for s in required_generated_secrets(ts)}
        assert set(self.generated) == {"split-oidc", "split-oidc-internal"}, self.generated.keys()
        secrets = {("sso-client", "secret"): CLIENT_SECRET, ("db", "uri"): postgres.create_database(template=template)}
        for name, values in self.generated.items():
            secrets.update({(name, k): v for k, v in values.items()})
        self.secrets = secrets
        pods = {m["metadata"]["name"]: m["spec"]["template"]["spec"] for m in render(ts) if m["kind"] == "Deployment"}
        htpasswd = tmp / "htpasswd"
        htpasswd.write_text(self.generated["split-oidc-internal"]["htpasswd"])
        self.servers, self.proxies = {}, {}
        for component, deployment in (("artifacts", "split-artifacts"), ("tracking", "split")):
            containers = {c["name"]: c for c in pods[deployment]["containers"]}
            env = secret_env(containers["mlflow"], secrets)
            env.pop("MLFLOW_OPERATOR_POD_IPS", None)
            env.pop("MLFLOW_OPERATOR_PORT")
            env.pop("MLFLOW_OPERATOR_SCRATCH_DIR")
            env["MLFLOW_OPERATOR_WORKERS"] = "1"
            if component == "artifacts":
                env["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"] = str(self.artifacts_dir)
            else:  # the artifacts Service, i.e. the artifacts pods' proxy
                assert env["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"].endswith(":5000/api/2.0/mlflow-artifacts/artifacts")
                env["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"] = (
                    f"http://127.0.0.1:{ports['artifacts']}/api/2.0/mlflow-artifacts/artifacts")
            self.servers[component] = start_entrypoint(server_venv, env, tmp / f"server-{component}", name=component)
            sidecar = containers["oauth2-proxy"]
            args = local_proxy_args(sidecar["args"], ports[component], self.servers[component].port, self.dex.ca_file)
            args = [f"--htpasswd-file={htpasswd}" if a.startswith("--htpasswd-file=") else a for a in args]
            self.proxies[component] = OAuth2Proxy(args, secret_env(sidecar, secrets), tmp / f"proxy-{component}",
                                                  ports[component], f"proxy-{component}").start()
        self.route.start()

    @property
    def url(self) -> str:
        return self.route.url

    @property
    def artifacts_service(self) -> str:
        return self.proxies["artifacts"].url

    def token(self, user) -> str:
        return self.dex.password_token(user, self.client)

    def logs(self) -> str:
        return "\n".join(p.output() for p in self.proxies.values()) + "\n".join(s.output() for s in self.servers.values())

    def stop(self) -> None:
        self.route.stop()
        for p in self.proxies.values():
            p.stop()
        for s in self.servers.values():
            s.stop()
        self.dex.stop()


@pytest.fixture(scope="module")
def split(tmp_path_factory, server_venv, postgres, _migrated_template):
    try:
        s = SplitStack(tmp_path_factory.mktemp("oidc-split"), server_venv, postgres, _migrated_template)
    except ServiceError as e:
        pytest.fail(f"the OIDC split stack could not be started: {e}", pytrace=False)
    yield s
    s.stop()


def test_every_artifact_route_refuses_anonymous_requests_through_the_route_and_on_the_service(split):
    seen = []
    for base, where in ((split.url, "route"), (split.artifacts_service, "artifacts Service")):
        for api in ARTIFACT_APIS:
            for method, path, kw in artifact_requests(api):
                r = requests.request(method, base + path, timeout=30, allow_redirects=False, **kw)
                seen.append((where, method, path, r.status_code))
    refused = [s for s in seen if s[3] != 401]
    assert not refused, refused
    assert len(seen) == 28
    assert not any(split.artifacts_dir.rglob("*")), "an anonymous upload stored something"


def test_a_signed_in_users_token_uploads_downloads_and_lists_and_only_admins_delete(split):
    alice, bob = bearer(split.token(ALICE)), bearer(split.token(BOB))
    path = f"{split.url}{ARTIFACTS_API}/artifacts/alice/notes.txt"
    assert requests.put(path, data=b"hello from alice", headers=alice, timeout=30).status_code == 200
    assert (split.artifacts_dir / "alice" / "notes.txt").read_bytes() == b"hello from alice"
    got = requests.get(path, headers=alice, timeout=30)
    assert got.status_code == 200 and got.content == b"hello from alice"
    listing = requests.get(f"{split.url}{ARTIFACTS_API}/artifacts", params={"path": "alice"}, headers=alice, timeout=30)
    assert listing.status_code == 200 and [f["path"] for f in listing.json()["files"]] == ["notes.txt"], listing.text
    denied = requests.delete(path, headers=alice, timeout=30)
    assert denied.status_code == 403, denied.status_code
    # multipart: past the sidecar, MLflow itself answers (the local store has no multipart upload)
    mpu = requests.post(f"{split.url}{ARTIFACTS_API}/mpu/create/alice/big.bin", json={"path": "big.bin", "num_parts": 2},
                        headers=alice, timeout=30)
    assert mpu.status_code not in (401, 403), mpu.status_code
    mallory = requests.get(path, headers=bearer(split.token(MALLORY)), timeout=30)
    assert mallory.status_code == 403
    assert requests.delete(path, headers=bob, timeout=30).status_code == 200
    assert not (split.artifacts_dir / "alice" / "notes.txt").exists()


def test_the_tracking_pods_reach_the_artifacts_pods_with_their_credential_and_nothing_else_does(split, client):
    token = split.token(ALICE)
    out = last_json(client(TUTORIAL, tutorial_env(split.url, EXPERIMENT="split-sso", MLFLOW_TRACKING_TOKEN=token),
                           timeout=900).stdout)
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out
    # the UI's download goes to the tracking pods, which fetch it from the artifacts pods
    r = requests.get(f"{split.url}/get-artifact", params={"path": "notes/notes.txt", "run_uuid": out["run_id"]},
                     headers=bearer(token), timeout=60)
    assert r.status_code == 200 and r.content, (r.status_code, r.text[:300])
    internal = split.generated["split-oidc-internal"]
    user = oidc_render.INTERNAL_USER
    listing = f"{split.artifacts_service}{ARTIFACTS_API}/artifacts"
    ok = requests.get(listing, auth=(user, internal["password"]), timeout=30)
    assert ok.status_code == 200, ok.status_code
    wrong = requests.get(listing, auth=(user, internal["password"] + "x"), timeout=30)
    assert wrong.status_code == 401, wrong.status_code
    # the tracking pods' credential is for the artifacts pods only
    tracking = requests.get(f"{split.url}/api/2.0/mlflow/experiments/search?max_results=5",
                            auth=(user, internal["password"]), timeout=30)
    assert tracking.status_code == 401, tracking.status_code

    logs = split.logs()
    for name, value in (("internal password", internal["password"]), ("client secret", CLIENT_SECRET),
                        ("cookie secret", split.generated["split-oidc"]["cookie-secret"]), ("token", token)):
        assert value not in logs, f"the {name} is in a log"
    assert base64.b64encode(f"{user}:{internal['password']}".encode()).decode() not in logs


def test_an_artifacts_only_server_behind_the_sidecar_refuses_anonymous_requests(split, server_venv, tmp_path):
    doc = trackingserver(split.dex.issuer, split.route.port)
    doc["metadata"]["name"] = "store"
    doc["spec"] = {"artifacts": {"mode": "ArtifactsOnly", "destination": "s3://mlflow-artifacts/store"},
                   "auth": doc["spec"]["auth"]}
    ts = load_trackingserver(doc)
    [pod] = [m["spec"]["template"]["spec"] for m in render(ts) if m["kind"] == "Deployment"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert not any("htpasswd" in a for a in containers["oauth2-proxy"]["args"])  # no tracking pods to let in
    secrets = {("sso-client", "secret"): CLIENT_SECRET, ("store-oidc", "cookie-secret"): base64.urlsafe_b64encode(b"k" * 32).decode()}
    env = secret_env(containers["mlflow"], secrets)
    assert env["MLFLOW_OPERATOR_ROLE"] == "artifacts" and env["MLFLOW_OPERATOR_HOST"] == "127.0.0.1"
    for name in ("MLFLOW_OPERATOR_POD_IPS", "MLFLOW_OPERATOR_PORT", "MLFLOW_OPERATOR_SCRATCH_DIR"):
        env.pop(name, None)
    store = tmp_path / "store"
    store.mkdir()
    env.update({"MLFLOW_OPERATOR_ARTIFACTS_DESTINATION": str(store), "MLFLOW_OPERATOR_WORKERS": "1"})
    server = start_entrypoint(server_venv, env, tmp_path / "server", name="artifacts-only")
    port = free_port()
    proxy = OAuth2Proxy(local_proxy_args(containers["oauth2-proxy"]["args"], port, server.port, split.dex.ca_file),
                        secret_env(containers["oauth2-proxy"], secrets), tmp_path / "proxy", port).start()
    try:
        statuses = [(m, p, requests.request(m, proxy.url + p, timeout=30, allow_redirects=False, **kw).status_code)
                    for api in ARTIFACT_APIS for m, p, kw in artifact_requests(api)]
        assert [s for s in statuses if s[2] != 401] == [] and len(statuses) == 14
        assert not any(store.rglob("*"))
        alice = bearer(split.token(ALICE))
        put = requests.put(f"{proxy.url}{ARTIFACTS_API}/artifacts/a/b.txt", data=b"stored", headers=alice, timeout=30)
        assert put.status_code == 200 and (store / "a" / "b.txt").read_bytes() == b"stored"
    finally:
        proxy.stop()
        server.stop()


def test_chromium_signs_in_through_the_route_and_the_ui_reads_an_artifact(split, tmp_path):
    from tests.browser import Browser, spki_sha256

    cert = split.dex.tls.cert.read_text()
    browser = Browser(tmp_path, [f"--ignore-certificate-errors-spki-list={spki_sha256(cert)}"])
    try:
        browser_signs_in(browser, split.url + "/#/experiments", ALICE)
        home = browser.open(split.url + "/#/experiments", "split-sso", timeout=180)
        assert "Experiments" in home, home[:1000]
        # the signed-in browser's own request for an artifact, through the route to the artifacts pods
        got = browser.call("Runtime.evaluate", awaitPromise=True, returnByValue=True, expression=(
            "fetch('/ajax-api/2.0/mlflow-artifacts/artifacts?path=').then(r => r.status)"))
        assert got["result"]["value"] == 200, got
    finally:
        browser.close()
