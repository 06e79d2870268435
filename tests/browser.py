"""Debian's headless Chromium driven over its DevTools protocol (websocket-client, already a dependency
of `kubernetes`): navigate, read the page's text, take a screenshot.

Shared by the tiers that open the UI (tests/node's UI over TLS, tests/workload's OIDC sign-in).
A test reaches an Ingress host with --host-resolver-rules (e.g. MAP <host> 127.0.0.1:<port>, the
ingress controller's loopback forwarder) and trusts exactly the served certificate with
--ignore-certificate-errors-spki-list (its public key's SHA-256, `spki_sha256`): the browser-side
equivalents of a client's name resolution and CA file.
"""
from __future__ import annotations

import base64
import hashlib
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

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


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
    """The base64 SHA-256 of a certificate's public key (what --ignore-certificate-errors-spki-list takes)."""
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout"], input=cert_pem.encode(), capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True, check=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()
