"""Scenario 3 and the web UI on real pods, through the real ingress controller, over TLS from a CA the
test makes.

03-local-artifacts.yaml (SQLite and artifacts on the volume, an HTTPS Ingress with a 10Gi upload
limit) as applied by a user, with its TLS Secret signed by the test's own CA. Traefik terminates TLS
with that certificate on its websecure entry point. The stock client, outside the cluster, reaches
https://mlflow.vision.example.com (the example's host, resolved to the controller's loopback
forwarder) and verifies it with MLFLOW_TRACKING_SERVER_CERT_PATH; without that setting the same
call fails verification. Plain HTTP for the host is redirected to HTTPS (ingress-nginx's default,
which Traefik's provider keeps). Debian's headless Chromium opens the route's URL, the experiments
page renders, and the experiment's page shows the tutorial run; the screenshot is kept under
test-artifacts/node/. Traefik's access log shows the UI's own requests arrived over TLS.
"""
from __future__ import annotations

import ssl

import pytest

from localcluster.certs import CertificateAuthority
from testservices import REPO
from tests.browser import Browser, spki_sha256
from tests.operator_fixtures import get_json, wait_for
from tests.workload.server_env import last_json, tutorial_env
from tests.workload.server_env import TUTORIAL

from .ingress_client import DOMAIN, client_script, served, wait_routed
from .test_examples_on_real_pods import QUICK, _storage_class_like

pytestmark = [pytest.mark.node, pytest.mark.timeout(1500)]

HOST = "mlflow.vision.example.com"  # 03's own host name
ARTIFACTS_DIR = REPO / "test-artifacts" / "node"

RUN_INFO = r"""
import json, os
import mlflow
run = mlflow.get_run(os.environ["RUN_ID"])
exp = mlflow.get_experiment(run.info.experiment_id)
print(json.dumps({"run_name": run.info.run_name, "experiment": exp.name}))
"""

HTTP_PROBE = r"""
import json, os
import requests
r = requests.get(os.environ["URL"], allow_redirects=False, timeout=60)
print(json.dumps({"status": r.status_code, "location": r.headers.get("Location")}))
"""

# One tracking call, no retries: what the stock client says when it cannot verify the server.
ONE_CALL = r"""
import json
import mlflow
try:
    mlflow.search_experiments(max_results=1)
    outcome = "connected"
except Exception as exc:  # what the user sees
    outcome = f"{type(exc).__name__}: {exc}"
print(json.dumps({"outcome": outcome[:3000]}))
"""


def test_scenario3_tls_from_a_test_ca_the_tutorial_and_the_ui(real, node_ingress, tmp_path):
    ts = real.example("03-local-artifacts.yaml")
    _storage_class_like(real, "fast-ssd")
    ca = CertificateAuthority(tmp_path / "ca", name="mlflow-operator node test CA")
    pair = ca.issue("vision", HOST, server_sans=(f"DNS:{HOST}",), client=False)
    cert = pair.cert.read_text()
    real.secret("mlflow-vision-tls", {"tls.crt": cert, "tls.key": pair.key.read_text()}, "kubernetes.io/tls")
    real.apply(ts)
    live = real.timed("ready", lambda: real.wait_ready("vision", MigrationsApplied="True"))
    url = live["status"]["url"]
    assert url == f"https://{HOST}", url
    trusted = ssl.create_default_context(cafile=str(ca.cert))
    real.timed("routed", lambda: wait_routed(node_ingress, HOST, tls=trusted))

    def client(script: str, env: dict[str, str], **kw):
        return real.client(client_script(node_ingress, script, hosts=(HOST,)), env, **kw)

    with_ca = {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_SERVER_CERT_PATH": str(ca.cert)}
    out = real.timed("tutorial", lambda: last_json(client(TUTORIAL, tutorial_env(
        url, EXPERIMENT="vision-tutorial", MLFLOW_TRACKING_SERVER_CERT_PATH=str(ca.cert))).stdout))
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out

    # The same call with and without the CA: only the certificate setting differs.
    one = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    assert last_json(client(ONE_CALL, {**with_ca, **one}).stdout) == {"outcome": "connected"}
    refused = last_json(client(ONE_CALL, {"MLFLOW_TRACKING_URI": url, **one}).stdout)["outcome"]
    assert "CERTIFICATE_VERIFY_FAILED" in refused, refused

    redirect = last_json(client(HTTP_PROBE, {"URL": f"http://{HOST}/api/2.0/mlflow/experiments/search"}).stdout)
    assert redirect == {"status": 308, "location": f"https://{HOST}/api/2.0/mlflow/experiments/search"}, redirect
    info = last_json(client(RUN_INFO, {**with_ca, "RUN_ID": out["run_id"]}).stdout)

    shot = ARTIFACTS_DIR / "ui-experiment-runs.png"
    browser = Browser(tmp_path, [f"--host-resolver-rules=MAP {HOST} 127.0.0.1:{node_ingress.tls_port}",
                                 f"--ignore-certificate-errors-spki-list={spki_sha256(cert)}"])
    try:
        home = real.timed("ui: experiments page", lambda: browser.open(f"{url}/#/experiments", info["experiment"]))
        assert "Experiments" in home, home[:1000]
        # the experiment's "Training runs" tab (MLflow 3's experiment page opens on an overview)
        page = real.timed("ui: the tutorial run", lambda: browser.open(
            f"{url}/#/experiments/{out['experiment_id']}/runs", info["run_name"]))
        browser.screenshot(shot)
    finally:
        browser.close()
    assert info["run_name"] in page
    assert shot.stat().st_size > 10_000, "the screenshot is (nearly) empty"
    # the UI's own requests went through the controller, over TLS, to the server
    ajax = served(node_ingress, HOST, "/ajax-api/")
    assert ajax and any(e.get("DownstreamStatus") == 200 for e in ajax), ajax[-5:]
    assert all(e.get("TLSVersion") for e in ajax), f"a UI request did not come over TLS: {ajax[-3:]}"


def test_httproute_behind_an_https_gateway_listener_with_a_test_ca(real, node_ingress, tmp_path):
    """spec.gateway on a team's own Gateway whose HTTPS listener (port 8443: Traefik's websecure entry
    point) terminates TLS with a certificate from the test's CA, the Secret beside the Gateway: the
    rendered HTTPRoute is Accepted there, status.url is https://<host>, and the stock client logs and
    reads back a run and an artifact through it with MLFLOW_TRACKING_SERVER_CERT_PATH; the same
    call without it fails verification."""
    host = f"secure.{real.namespace}.{DOMAIN}"
    ca = CertificateAuthority(tmp_path / "ca", name="mlflow-operator node test CA")
    # the host is in the SAN; a CN holds at most 64 characters and this host is longer
    pair = ca.issue("gateway", "team-https gateway", server_sans=(f"DNS:{host}",), client=False)
    real.secret("team-https-tls", {"tls.crt": pair.cert.read_text(), "tls.key": pair.key.read_text()},
                "kubernetes.io/tls")
    real.apply({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "team-https", "namespace": real.namespace},
                "spec": {"gatewayClassName": node_ingress.gateway_class, "listeners": [{
                    "name": "https", "protocol": "HTTPS", "port": node_ingress.tls_entrypoint_port, "hostname": host,
                    "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "team-https-tls"}]},
                    "allowedRoutes": {"namespaces": {"from": "Same"}}}]}})
    real.apply({"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
                "metadata": {"name": "secure", "namespace": real.namespace},
                "spec": {"gateway": {"parentRefs": [{"name": "team-https"}], "hostnames": [host]}}})
    live = real.timed("ready", lambda: real.wait_ready("secure"))
    url = live["status"]["url"]
    assert url == f"https://{host}", url

    def accepted():
        route = get_json(real.cluster, "httproute", "secure", "-n", real.namespace)
        conds = {c["type"]: c["status"] for p in (route.get("status") or {}).get("parents") or []
                 for c in p.get("conditions", [])}
        return route if conds.get("Accepted") == "True" and conds.get("ResolvedRefs") == "True" else None

    wait_for("the HTTPRoute Accepted by the HTTPS Gateway", accepted, timeout=120, interval=1, explain=real.explain)
    real.timed("routed", lambda: wait_routed(node_ingress, host, tls=ssl.create_default_context(cafile=str(ca.cert)),
                                             timeout=180))

    env = {"MLFLOW_TRACKING_URI": url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
    out = last_json(real.client(client_script(node_ingress, QUICK), {
        **env, "MLFLOW_TRACKING_SERVER_CERT_PATH": str(ca.cert), "EXAMPLE": "gateway-tls"}).stdout)
    assert out["artifact_uri"].startswith("mlflow-artifacts:/") and out["downloaded"] == "hello from gateway-tls\n", out
    refused = last_json(real.client(client_script(node_ingress, ONE_CALL), env).stdout)["outcome"]
    assert "CERTIFICATE_VERIFY_FAILED" in refused, refused
    calls = served(node_ingress, host, "/api/2.0/")
    assert calls and all(e.get("TLSVersion") for e in calls), f"a call did not come over TLS: {calls[-3:]}"
