"""The server image for the MLflow release before the pinned one: what a cluster ran before an
upgrade, so the upgrade test (tests/node/test_upgrade_on_real_pods.py) starts from a real image
of it and moves to the current one.

It is the same Dockerfile, install.sh and entrypoint as the current server image; only the lock
differs: ``mlflow==<previous>`` in place of the pinned MLflow, plus what that release imports at
start-up beyond the pinned release's lean set, at the versions the client's lock (same Python,
same numpy) pins. Building it is what building server-image/ with that pin in its lock does.
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER_LOCK = REPO / "server-image" / "requirements.lock"
CLIENT_LOCK = REPO / "hack" / "testservices" / "client-requirements.lock"

# The release before the pinned one (its schema head differs: an upgrade must migrate).
PREVIOUS_MLFLOW = "3.17.2"
# 3.17.2 imports pandas at start-up (mlflow.gateway.guardrails); 3.18.0 does not.
EXTRA_SERVER_PACKAGES = {"3.17.2": ("pandas",)}


class LockError(RuntimeError):
    """The previous release's lock cannot be derived; the message says what is missing."""


def server_lock(version: str = PREVIOUS_MLFLOW) -> str:
    """server-image/requirements.lock with MLflow `version` (and what it needs more) pinned."""
    lock = SERVER_LOCK.read_text()
    pinned = [line for line in lock.splitlines() if line.startswith("mlflow==")]
    if len(pinned) != 1:
        raise LockError(f"{SERVER_LOCK} must pin mlflow exactly once")
    lock = lock.replace(pinned[0], f"mlflow=={version}")
    client = CLIENT_LOCK.read_text().splitlines()
    for package in EXTRA_SERVER_PACKAGES.get(version, ()):
        pin = next((line for line in client if line.lower().startswith(package + "==")), None)
        if pin is None:
            raise LockError(f"{CLIENT_LOCK} pins no {package} (needed by the MLflow {version} server)")
        lock += pin + "\n"
    return lock
