"""A real Google Cloud Storage endpoint: fake-gcs-server, built from its Go module (gobinaries).

It speaks GCS's JSON API (multipart and resumable uploads, listings, media downloads), which
google-cloud-storage reaches through STORAGE_EMULATOR_HOST (spec.artifacts.gcs.endpointUrl); the
library then sends no credentials, as with any GCS emulator. Plain HTTP on 127.0.0.1, objects on
disk in a temp dir. A resumable upload's Location is built from the request's Host header, so
clients on the host and pods (through a Service's DNS name) can both use one server.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from . import ServiceError
from ._util import die_with_parent, disowned, free_port, owned, stop, tail, wait_port
from .gobinaries import fake_gcs_server_binary


class FakeGCSServer:
    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mlflow-op-gcs-"))
        self.log = self.dir / "fake-gcs-server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        """STORAGE_EMULATOR_HOST for a process on the host."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeGCSServer":
        binary = fake_gcs_server_binary()
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                 "-backend", "filesystem", "-filesystem-root", str(self.dir / "data"), "-log-level", "warn"],
                stdout=fh, stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        owned(self)
        wait_port(self.port, 60, self.proc, "fake-gcs-server", self.log)
        deadline = time.monotonic() + 60
        while True:  # listening is not yet serving: wait for an answer of the JSON API
            try:
                self._get("/storage/v1/b")
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise ServiceError("fake-gcs-server did not answer" + tail(self.log)) from None
                time.sleep(0.2)

    def _get(self, path: str, **query: str) -> bytes:
        url = self.endpoint + path + ("?" + urllib.parse.urlencode(query) if query else "")
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read()

    def create_bucket(self, name: str) -> str:
        """Creates the bucket (an existing one is kept)."""
        req = urllib.request.Request(f"{self.endpoint}/storage/v1/b?project=test", method="POST",
                                     data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=30).close()
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise
        return name

    def object_names(self, bucket: str, prefix: str = "") -> list[str]:
        names, token = [], None
        while True:
            page = json.loads(self._get(f"/storage/v1/b/{bucket}/o", prefix=prefix, **({"pageToken": token} if token else {})))
            names += [o["name"] for o in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return names

    def read(self, bucket: str, name: str) -> bytes:
        return self._get(f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}", alt="media")

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server through google-cloud-storage (MLflow's GCS repo)."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    def stop(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
        disowned(self)
