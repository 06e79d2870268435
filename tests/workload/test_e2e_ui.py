"""Scenario 3 and the web UI end to end (03-local-artifacts.yaml: SQLite and artifacts on the volume, an
HTTPS Ingress with a 10Gi upload limit): the tutorial through https://<host> (TLS verified against the test
CA), HTTP redirected to HTTPS, then Debian's headless Chromium opens the route's URL, the experiments
page renders, and the experiment's page shows the tutorial run. One screenshot is kept under
test-artifacts/e2e/.

Chromium is driven over its DevTools protocol (websocket-client, already a dependency of `kubernetes`).
It resolves the Ingress host to the ingress controller's address with --host-resolver-rules and trusts
exactly the served certificate with --ignore-certificate-errors-spki-list (its public key's SHA-256):
the browser-side equivalents of the client's /etc/hosts entry and CA file.
"""
from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import websocket

from .conftest import ARTIFACTS_DIR, last_json, tutorial_env
from .server_env import TUTORIAL

pytestmark = pytest.mark.timeout(1500)

CHROMIUM = Path("/usr/bin/chromium")
HOST = "mlflow.vision.example.com"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

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


class Browser:
    """Headless Chromium over the DevTools protocol: navigate, read the page's text, take a screenshot."""

    def __init__(self, workdir: Path, extra: list[str]):
        if not CHROMIUM.exists():
            pytest.fail("Chromium is not installed (/usr/bin/chromium); run hack/system-deps", pytrace=False)
        self.profile = workdir / "chromium-profile"
        shutil.rmtree(self.profile, ignore_errors=True)
        self.log = workdir / "chromium.log"
        self.proc = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             "--window-size=1440,960", *extra, "about:blank"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"), start_new_session=True)
        self.ids = itertools.count(1)
        port = self._devtools_port(60)
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)

    def _devtools_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", self.log.read_text(errors="replace"))
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"Chromium did not open its DevTools port:\n{self.log.read_text(errors='replace')[-3000:]}")

    def call(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def text(self) -> str:
        res = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''", returnByValue=True)
        return res.get("result", {}).get("value") or ""

    def open(self, url: str, expect: str, timeout: float = 120) -> str:
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if expect in text:
                return text
            time.sleep(1)
        raise AssertionError(f"{url}: {expect!r} did not appear within {timeout:g} s; the page shows:\n{text[:3000]}")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            shutil.rmtree(self.profile, ignore_errors=True)


def spki_sha256(cert_pem: str) -> str:
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout"], input=cert_pem.encode(), capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True, check=True).stdout
    import hashlib

    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def test_scenario3_https_ingress_tutorial_and_the_ui(e2e, tmp_path):
    ts = e2e.example("03-local-artifacts.yaml")
    e2e.tls_secret("mlflow-vision-tls", [HOST])
    e2e.apply(ts)
    live = e2e.timed("ready", lambda: e2e.wait_ready("vision", MigrationsApplied="True"))
    url = live["status"]["url"]
    assert url == f"https://{HOST}", url
    out = e2e.timed("tutorial", lambda: last_json(e2e.client(TUTORIAL, tutorial_env(url, EXPERIMENT="vision-tutorial")).stdout))
    assert out["artifact_uri"].startswith("mlflow-artifacts:/")
    redirect = last_json(e2e.client(HTTP_PROBE, {"URL": f"http://{HOST}/api/2.0/mlflow/experiments/search"}).stdout)
    assert redirect == {"status": 308, "location": f"https://{HOST}/api/2.0/mlflow/experiments/search"}, redirect
    info = last_json(e2e.client(RUN_INFO, {"MLFLOW_TRACKING_URI": url, "RUN_ID": out["run_id"]}).stdout)

    cert = e2e.secret_value("mlflow-vision-tls", "tls.crt")
    browser = Browser(tmp_path, [f"--host-resolver-rules=MAP {HOST} {e2e.ingress.address}",
                                 f"--ignore-certificate-errors-spki-list={spki_sha256(cert)}"])
    try:
        home = e2e.timed("ui: experiments page", lambda: browser.open(f"{url}/#/experiments", info["experiment"]))
        assert "Experiments" in home, home[:1000]
        # the experiment's "Training runs" tab (MLflow 3's experiment page opens on an overview)
        page = e2e.timed("ui: the tutorial run", lambda: browser.open(
            f"{url}/#/experiments/{out['experiment_id']}/runs", info["run_name"]))
        browser.screenshot(ARTIFACTS_DIR / "ui-experiment-runs.png")
    finally:
        browser.close()
    assert info["run_name"] in page
    shot = ARTIFACTS_DIR / "ui-experiment-runs.png"
    assert shot.stat().st_size > 10_000, "the screenshot is (nearly) empty"
    # the UI's own requests went through NGINX with TLS to the server
    ajax = [line for line in e2e.ingress.access_lines() if f"host={HOST}" in line and "/ajax-api/" in line]
    assert ajax and any("status=200" in line for line in ajax), ajax[-5:]
