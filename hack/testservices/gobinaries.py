"""Go programs the tests run, built from their Go modules and cached.

- oauth2-proxy (the OIDC sign-in sidecar of ``auth.type: OIDC``): ``go install`` of
  github.com/oauth2-proxy/oauth2-proxy/v7 at OAUTH2_PROXY_VERSION (its go.mod has no replace
  directive, so it builds as pinned).
- Dex (the real OpenID Connect provider of the tests): github.com/dexidp/dex's go.mod replaces
  its own api/v2 module with a local directory, which `go install module@version` refuses, so it
  is built from a throwaway module that requires it (api/v2 then comes from the module proxy at
  the version Dex requires). Dex tags (v2.x) do not match its module path, so the module proxy
  serves them only as pseudo-versions: DEX_VERSION is Dex v2.45.1's commit.
- fake-gcs-server (the Google Cloud Storage server of the GCS artifact tests): ``go install`` of
  github.com/fsouza/fake-gcs-server at FAKE_GCS_SERVER_VERSION (no replace directive either).

Each binary is cached at ``<cache>/bin/<name>/<version>/<name>`` with ``.build-seconds`` (the
cold build's wall time) beside it; a warm cache builds nothing. Builds take a file lock, so two
sessions never build the same binary at once. CGO is off (Dex then has no SQLite storage; the
tests use its memory storage).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from localcluster.build import file_lock

from . import ServiceError, cache_dir
from ._util import tail

OAUTH2_PROXY_MODULE = "github.com/oauth2-proxy/oauth2-proxy/v7"
OAUTH2_PROXY_VERSION = "v7.15.6"
DEX_MODULE = "github.com/dexidp/dex"
DEX_VERSION = "v0.0.0-20260303133905-11d2eeb52b42"  # Dex v2.45.1 (tag commit 11d2eeb52b42)
DEX_API_VERSION = "v2.4.0"  # github.com/dexidp/dex/api/v2, as Dex v2.45.1's go.mod requires
FAKE_GCS_SERVER_MODULE = "github.com/fsouza/fake-gcs-server"
FAKE_GCS_SERVER_VERSION = "v1.56.1"
BUILD_TIMEOUT = 90 * 60


def _go() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise ServiceError("oauth2-proxy, Dex and fake-gcs-server are built from source and `go` is not on PATH (install Go 1.26+)")
    return go


def _build(name: str, version: str, run) -> Path:
    dest = cache_dir() / "bin" / name / version
    binary = dest / name
    if binary.exists():
        return binary
    with file_lock(dest.parent / f".{version}.lock"):
        if binary.exists():
            return binary
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log = dest.parent / f"build-{version}.log"
        t0 = time.monotonic()
        with open(log, "wb") as fh:
            proc = run(tmp, fh)
        if proc.returncode != 0 or not (tmp / name).exists():
            raise ServiceError(f"building {name} {version} failed (exit {proc.returncode})" + tail(log))
        (tmp / ".build-seconds").write_text(f"{time.monotonic() - t0:.0f}\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return binary


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-buildvcs=false -trimpath")
    env.update(extra)
    return env


def _go_install(name: str, module: str, version: str) -> Path:
    """``go install module@version`` (a module without replace directives), cached as ``name``."""
    def run(tmp: Path, fh):
        return subprocess.run(
            [_go(), "install", "-p", "2", f"{module}@{version}"],
            stdout=fh, stderr=subprocess.STDOUT, env=_env(GOBIN=str(tmp)), timeout=BUILD_TIMEOUT,
            cwd=tempfile.gettempdir(),
        )

    return _build(name, version, run)


def oauth2_proxy_binary() -> Path:
    return _go_install("oauth2-proxy", OAUTH2_PROXY_MODULE, OAUTH2_PROXY_VERSION)


def fake_gcs_server_binary() -> Path:
    return _go_install("fake-gcs-server", FAKE_GCS_SERVER_MODULE, FAKE_GCS_SERVER_VERSION)


def dex_binary() -> Path:
    def run(tmp: Path, fh):
        work = cache_dir() / "build" / f"dex-{DEX_VERSION}"
        work.mkdir(parents=True, exist_ok=True)
        gomod = (
            "module mlflow-operator.dev/dexbuild\n\ngo 1.25.8\n\n"
            f"require (\n\t{DEX_MODULE} {DEX_VERSION}\n\t{DEX_MODULE}/api/v2 {DEX_API_VERSION}\n)\n"
        )
        # `go build -mod=mod` adds the indirect requirements to go.mod; keep them while the pin holds.
        if not (work / "go.mod").is_file() or f"{DEX_MODULE} {DEX_VERSION}" not in (work / "go.mod").read_text():
            (work / "go.mod").write_text(gomod)
            (work / "go.sum").unlink(missing_ok=True)
        (work / "tools.go").write_text(
            "//go:build tools\n\npackage dexbuild\n\nimport _ \"github.com/dexidp/dex/cmd/dex\"\n"
        )
        return subprocess.run(
            [_go(), "build", "-p", "2", "-o", str(tmp / "dex"), f"{DEX_MODULE}/cmd/dex"],
            stdout=fh, stderr=subprocess.STDOUT, env=_env(GOFLAGS="-buildvcs=false -trimpath -mod=mod"),
            timeout=BUILD_TIMEOUT, cwd=work,
        )

    return _build("dex", DEX_VERSION, run)


# Dex's static passwords are bcrypt hashes; this hashes one (stdin to stdout) with the package Dex
# checks them with, from the same throwaway module (golang.org/x/crypto is among Dex's requirements).
# The cost is bcrypt's default (10), the rounds the crypt(3) hashes had before.
BCRYPT_MAIN = """package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

func main() {
	password, err := io.ReadAll(os.Stdin)
	if err == nil {
		var hash []byte
		if hash, err = bcrypt.GenerateFromPassword([]byte(strings.TrimRight(string(password), "\\n")), bcrypt.DefaultCost); err == nil {
			fmt.Println(string(hash))
			return
		}
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
"""


def dex_bcrypt_binary() -> Path:
    def run(tmp: Path, fh):
        dex_binary()  # its module directory, with golang.org/x/crypto required
        work = cache_dir() / "build" / f"dex-{DEX_VERSION}"
        (work / "cmd" / "dex-bcrypt").mkdir(parents=True, exist_ok=True)
        (work / "cmd" / "dex-bcrypt" / "main.go").write_text(BCRYPT_MAIN)
        return subprocess.run(
            [_go(), "build", "-p", "2", "-o", str(tmp / "dex-bcrypt"), "./cmd/dex-bcrypt"],
            stdout=fh, stderr=subprocess.STDOUT, env=_env(GOFLAGS="-buildvcs=false -trimpath -mod=mod"),
            timeout=BUILD_TIMEOUT, cwd=work,
        )

    return _build("dex-bcrypt", DEX_VERSION, run)


def build_seconds(binary: Path) -> str:
    """The cold build's wall time recorded beside a cached binary ('?' when unknown)."""
    stamp = binary.parent / ".build-seconds"
    return stamp.read_text().strip() if stamp.is_file() else "?"


if __name__ == "__main__":  # `make build`: before pytest, so a cold build never counts against a test's timeout
    for build in (oauth2_proxy_binary, dex_binary, dex_bcrypt_binary, fake_gcs_server_binary):
        path = build()
        print(f"{path} (cold build: {build_seconds(path)} s)")
