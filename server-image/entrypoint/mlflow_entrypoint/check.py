"""``check``: what the operator turns into status conditions, as JSON on stdout.

- every database (tracking, registry, auth): reachable, and its schema revision against the image's;
- the artifact destination of a proxying server: writable, by a real put and delete of a small object
  through MLflow's own artifact repository for that URI (the code and credentials the server uses).
The exit code is 0 only if everything checked is fine.
"""
from __future__ import annotations

import logging
import socket
import tempfile
import uuid
from pathlib import Path

from . import db
from .config import Settings
from .redact import redact

log = logging.getLogger("mlflow_entrypoint")
CHECK_DIR = ".mlflow-operator-check"


def check_artifacts(uri: str) -> dict:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    name = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}.txt"
    result = {"destination": redact(uri), "writable": False, "error": None}
    try:
        repo = get_artifact_repository(uri)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / name
            local.write_text("mlflow-operator check\n")
            repo.log_artifact(str(local), artifact_path=CHECK_DIR)
        listed = [f.path for f in repo.list_artifacts(CHECK_DIR)]
        if f"{CHECK_DIR}/{name}" not in listed:
            raise RuntimeError(f"the object written was not listed back ({listed[:5]})")
        repo.delete_artifacts(f"{CHECK_DIR}/{name}")
        result["writable"] = True
    except Exception as e:  # any store's error, reported not raised
        result["error"] = redact(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    return result


def run_check(s: Settings, connect_timeout: float = 5.0) -> dict:
    report: dict = {"ok": True, "role": s.role, "databases": [], "artifacts": None}
    for kind, uri in s.database_uris:
        entry = {"kind": kind, "target": db.describe(uri), "reachable": False, "schema": None, "error": None}
        try:
            db.ping(uri, connect_timeout)
            entry["reachable"] = True
            st = db.status_of(uri, kind, connect_timeout)
            entry["schema"] = {"state": st.state, "current": st.current, "head": st.head}
            if not st.ok:
                entry["error"] = st.explain(db.describe(uri))
        except db.BackendError as e:
            entry["error"] = redact(e)
        report["ok"] &= entry["reachable"] and entry["schema"] is not None and entry["schema"]["state"] == "current"
        report["databases"].append(entry)
    if s.serve_artifacts and s.artifacts_destination:
        report["artifacts"] = check_artifacts(s.artifacts_destination)
        report["ok"] &= report["artifacts"]["writable"]
    else:
        report["artifacts"] = {
            "destination": redact(s.default_artifact_root),
            "writable": None,
            "error": None,
            "skipped": "direct mode: clients write to the store with their own credentials",
        }
    return report
