"""A real S3-compatible server: MinIO, built from its Go module through the Go module proxy.

github.com/minio/minio publishes no semver tags (its releases are RELEASE.<date> tags), so the
module is pinned by a pseudo-version (commit). The binary is cached at
``<cache>/bin/minio/<version>/minio``; a warm cache builds nothing.
"""
from __future__ import annotations

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

MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"  # master of 2026-02-12 (commit 7aac2a2c5b7c)
BUILD_TIMEOUT = 60 * 60


def minio_binary() -> Path:
    """The cached MinIO binary; builds it with `go install` (-p 2, CGO off) when missing."""
    dest = cache_dir() / "bin" / "minio" / MINIO_VERSION
    binary = dest / "minio"
    if binary.exists():
        return binary
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise ServiceError("MinIO must be built from source and `go` is not on PATH (install Go 1.24+)")
    with file_lock(dest.parent / f".{MINIO_VERSION}.lock"):
        if binary.exists():
            return binary
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log = dest.parent / f"build-{MINIO_VERSION}.log"
        env = dict(os.environ, GOBIN=str(tmp), CGO_ENABLED="0", GOFLAGS="-buildvcs=false -trimpath")
        t0 = time.monotonic()
        with open(log, "wb") as fh:
            proc = subprocess.run(
                [go, "install", "-p", "2", f"{MINIO_MODULE}@{MINIO_VERSION}"],
                stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=BUILD_TIMEOUT, cwd=tempfile.gettempdir(),
            )
        if proc.returncode != 0 or not (tmp / "minio").exists():
            raise ServiceError(f"building MinIO {MINIO_VERSION} failed (exit {proc.returncode})" + tail(log))
        (tmp / ".build-seconds").write_text(f"{time.monotonic() - t0:.0f}\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return binary


class S3Server:
    region = "us-east-1"

    def __init__(self):
        self.access_key = "minio-" + secrets.token_hex(4)
        self.secret_key = "s3-" + secrets.token_urlsafe(18)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mlflow-op-s3-"))
        self.log = self.dir / "minio.log"
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3Server":
        binary = minio_binary()
        console = free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.dir),
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_CI_CD": "1",
        }
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [str(binary), "server", str(self.dir / "data"), "--address", f"127.0.0.1:{self.port}",
                 "--console-address", f"127.0.0.1:{console}", "--quiet"],
                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=die_with_parent(),
            )
        owned(self)
        wait_port(self.port, 60, self.proc, "minio", self.log)
        deadline = time.monotonic() + 60
        while True:  # listening is not yet serving: wait for the health endpoint
            import urllib.request

            try:
                with urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise ServiceError("minio did not become ready" + tail(self.log))
            time.sleep(0.2)
        return self

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server through boto3 (MLflow's S3 artifact repo)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
        }

    def stop(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
        disowned(self)
