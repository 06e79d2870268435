"""A real Azure Blob Storage endpoint: Azurite, Microsoft's emulator, from the npm registry.

Installed once with the ordinary `npm` client (Debian's nodejs/npm) at a pinned version into
``<cache>/npm/azurite/<version>``; a warm cache installs nothing. Only the blob service runs, on
127.0.0.1, with one storage account of our choosing (``AZURITE_ACCOUNTS``), so a spec can keep its
own account name (``wasbs://<container>@<account>.blob.core.windows.net/...``) while the connection
string's ``BlobEndpoint`` points at this server. Path-style URLs only (``--disableProductStyleUrl``):
the account is the first path segment, whatever host name a client used (a Service's DNS name).
"""
from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from localcluster.build import file_lock

from . import ServiceError, cache_dir
from ._util import die_with_parent, disowned, free_port, owned, stop, tail, wait_port

AZURITE_VERSION = "3.35.0"
INSTALL_TIMEOUT = 15 * 60


def azurite_blob_binary() -> Path:
    """The cached `azurite-blob` launcher; `npm install azurite@<pinned>` when missing."""
    dest = cache_dir() / "npm" / "azurite" / AZURITE_VERSION
    binary = dest / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise ServiceError("Azurite comes from the npm registry and `npm`/`node` are not on PATH "
                           "(run hack/system-deps: apt-get install nodejs npm)")
    with file_lock(dest.parent / f".{AZURITE_VERSION}.lock"):
        if binary.exists():
            return binary
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log = dest.parent / f"install-{AZURITE_VERSION}.log"
        t0 = time.monotonic()
        with open(log, "wb") as fh:
            proc = subprocess.run(
                [npm, "install", "--prefix", str(tmp), "--no-audit", "--no-fund", "--no-save",
                 f"azurite@{AZURITE_VERSION}"],
                stdout=fh, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT, cwd=tmp,
                env=dict(os.environ, npm_config_update_notifier="false"),
            )
        if proc.returncode != 0 or not (tmp / "node_modules" / ".bin" / "azurite-blob").exists():
            raise ServiceError(f"npm install azurite@{AZURITE_VERSION} failed (exit {proc.returncode})" + tail(log))
        (tmp / ".install-seconds").write_text(f"{time.monotonic() - t0:.0f}\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return binary


class Azurite:
    """Azurite's blob service for one storage account (``account``, a random key)."""

    def __init__(self, account: str = "mlflowtest"):
        self.account = account
        self.key = base64.b64encode(secrets.token_bytes(64)).decode()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mlflow-op-azurite-"))
        self.log = self.dir / "azurite.log"
        self.proc: subprocess.Popen | None = None

    def blob_endpoint(self, host: str = "127.0.0.1", port: int | None = None) -> str:
        return f"http://{host}:{port or self.port}/{self.account}"

    def connection_string(self, host: str = "127.0.0.1", port: int | None = None) -> str:
        """What azure-storage-blob (MLflow's AZURE_STORAGE_CONNECTION_STRING) needs to reach us."""
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
                f"BlobEndpoint={self.blob_endpoint(host, port)};")

    def env(self) -> dict[str, str]:
        """What a process on this machine needs to reach us through azure-storage-blob (MLflow's Azure repo)."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string()}

    def start(self) -> "Azurite":
        binary = azurite_blob_binary()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir),
               "AZURITE_ACCOUNTS": f"{self.account}:{self.key}"}
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location", str(self.dir / "data"),
                 "--disableProductStyleUrl", "--skipApiVersionCheck", "--loose", "--silent"],
                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=die_with_parent(),
            )
        owned(self)
        wait_port(self.port, 60, self.proc, "azurite", self.log)
        return self

    def stop(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
        disowned(self)
