"""Real services for the workload tests and the benchmark, started on 127.0.0.1 only.

- ``postgres``: Debian's PostgreSQL 15 (initdb + postgres in a temp dir, password auth).
- ``mysql``: Debian's MariaDB (mariadb-install-db + mariadbd in a temp dir, a password user).
- ``s3``: MinIO built from its Go module (cached), an S3-compatible server.
- ``azurite``: Azurite (Microsoft's Azure Storage emulator) installed with npm (cached), its blob service.
- ``gcs``: fake-gcs-server built from its Go module (``gobinaries``, cached), a Google Cloud Storage server.
- ``oidc``: Dex (a real OpenID Connect provider, TLS, static users with groups) and oauth2-proxy,
  both built from their Go modules (``gobinaries``, cached).
- ``nginx``: Debian's NGINX with a generated config (path routing, body size, timeouts).
- ``venvs``: the server image's virtualenv (built by server-image/install.sh) and a separate client
  virtualenv with the stock `mlflow` client and scikit-learn; cached by content hash.
- ``mlflowproc``: start ``mlflow-entrypoint`` (or anything) as a process and wait for /health.
- ``pytest_plugin``: session fixtures over all of the above.

Everything is cached under ``${XDG_CACHE_HOME:-~/.cache}/mlflow-operator/``; a warm cache builds nothing.
A service that cannot be provided raises ServiceError with the reason (fixtures fail, never skip).
Every service stops with the process that started it: at exit and on SIGTERM/SIGHUP (its data
directory removed), and by the kernel when that process is SIGKILLed (``_util.owned``,
``_util.die_with_parent``; tests/harness/test_testservices_die_with_owner.py).
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class ServiceError(RuntimeError):
    """A real service could not be provided; the message says why and what to install."""


def cache_dir() -> Path:
    """The cache the control-plane build uses too (localcluster.build.cache_root), created."""
    from localcluster.build import cache_root

    path = cache_root()
    path.mkdir(parents=True, exist_ok=True)
    return path
