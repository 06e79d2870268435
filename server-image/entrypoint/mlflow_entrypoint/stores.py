"""``check --init``: the init container of every server pod checks its stores where the pod runs.

The operator does not connect to a team's database or object store: it reads this result from the
pod's status. Each store gets a real client connection, bounded retries and a short reason:

- databases (tracking, registry, auth): a SQLAlchemy connect with the full handshake and
  ``SELECT 1`` (a connection that ends before the handshake counts against MySQL/MariaDB's
  ``max_connect_errors``; this one authenticates and closes cleanly), then the schema revision;
- the artifact destination of a server that proxies artifacts: a read-only listing (S3: one
  ``ListObjectsV2`` of at most one key, with bounded timeouts and no SDK retries; other stores:
  MLflow's own artifact repository for the URI), with the credentials the server uses.

The result goes to the container's termination message (``/dev/termination-log``, at most 4 KiB):
one line the operator shows (``mlflow-entrypoint check: ...``) and one line of JSON
(``mlflow-entrypoint check-report: {...}``) with the MLflow version the image serves. Every text
in it is redacted: host, port and database name, never a password or key.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlsplit

from . import __version__, db
from .config import Settings
from .redact import redact

REPORT_PREFIX = "mlflow-entrypoint check-report: "
SUMMARY_PREFIX = "mlflow-entrypoint check: "
MESSAGE_LIMIT = 4096  # the kubelet keeps at most 4 KiB of a termination message
ATTEMPT_SECONDS = 5.0
ARTIFACT_PROXY_API = "/api/2.0/mlflow-artifacts/artifacts"


def mlflow_version() -> str:
    try:
        return version("mlflow")
    except PackageNotFoundError:
        return "unknown"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def classify_database_error(text: str) -> str:
    """A condition reason for a driver's error (psycopg2 and PyMySQL wording)."""
    t = text.lower()
    if "could not translate host name" in t or "name or service not known" in t or "nodename nor servname" in t \
            or "temporary failure in name resolution" in t or "name does not resolve" in t or "errno -2" in t \
            or "errno -3" in t or "errno -5" in t:
        return "HostNotFound"
    if "timeout" in t or "timed out" in t:
        return "Timeout"
    if "connection refused" in t or "errno 111" in t:
        return "ConnectionRefused"
    if "password authentication failed" in t or "access denied" in t or "authentication failed" in t:
        return "AuthenticationFailed"
    if "does not exist" in t and "database" in t or "unknown database" in t:
        return "DatabaseNotFound"
    if "is blocked because of many connection errors" in t:
        return "HostBlocked"
    return "ConnectionFailed"


def check_database(kind: str, uri: str, wait_seconds: float) -> dict:
    """Bounded retries of one real connection; then the schema revision (reported, not judged:
    ``serve`` refuses a schema it cannot serve, with its own message)."""
    where = db.describe(uri)
    entry = {"kind": kind, "target": where, "reachable": False, "reason": "", "message": "", "attempts": 0}
    deadline = time.monotonic() + wait_seconds
    delay = 0.5
    while True:
        entry["attempts"] += 1
        try:
            db.ping(uri, connect_timeout=ATTEMPT_SECONDS)
            break
        except db.BackendError as e:
            detail = str(e).split(": ", 1)[-1]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                entry["reason"] = classify_database_error(detail)
                entry["message"] = redact(f"{kind} database {where}: {detail} ({entry['attempts']} attempts "
                                          f"in {wait_seconds:g} s)")
                return entry
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)
    entry["reachable"] = True
    entry["reason"] = "Reachable"
    try:
        st = db.status_of(uri, kind, ATTEMPT_SECONDS)
        entry["schema"] = {"state": st.state, "current": st.current, "head": st.head}
    except db.BackendError as e:
        entry["schema"] = {"state": "unknown", "error": redact(str(e))}
    entry["message"] = f"{kind} database {where} answered"
    return entry


def classify_storage_error(exc: BaseException) -> str:
    name = type(exc).__name__
    text = f"{name} {exc}".lower()
    code = ""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str((response.get("Error") or {}).get("Code") or "")
    if code in ("NoSuchBucket", "404") or "nosuchbucket" in text or "containernotfound" in text:
        return "BucketNotFound"
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "ExpiredToken") \
            or "accessdenied" in text or "forbidden" in text or "authorization" in text:
        return "AccessDenied"
    if "could not connect to the endpoint" in text or "name or service not known" in text \
            or "failed to resolve" in text or "nodename nor servname" in text or "name resolution" in text:
        # botocore says EndpointConnectionError for a refused connection and a name it cannot resolve
        return "HostNotFound" if ("resolve" in text or "name or service" in text) else "ConnectionFailed"
    if "timeout" in text or "timed out" in text:
        return "Timeout"
    return "StoreError"


def _list_s3(uri: str) -> None:
    import boto3
    from botocore.config import Config

    parts = urlsplit(uri)
    ignore_tls = os.environ.get("MLFLOW_S3_IGNORE_TLS", "").lower() in ("true", "1")
    client = boto3.client(
        "s3",
        endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None,
        verify=False if ignore_tls else None,
        config=Config(connect_timeout=ATTEMPT_SECONDS, read_timeout=ATTEMPT_SECONDS,
                      retries={"max_attempts": 1, "mode": "standard"}),
    )
    client.list_objects_v2(Bucket=parts.netloc, Prefix=parts.path.lstrip("/"), MaxKeys=1)


def _list_with_mlflow(uri: str) -> None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    get_artifact_repository(uri).list_artifacts()


def _list_once(uri: str) -> None:
    if uri.startswith("/"):
        if not Path(uri).parent.is_dir():
            raise FileNotFoundError(f"directory {Path(uri).parent} does not exist (volume not mounted?)")
        return
    if uri.startswith("s3://"):
        return _list_s3(uri)
    # Other SDKs have their own retries: one bounded attempt in a thread.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(_list_with_mlflow, uri).result(timeout=4 * ATTEMPT_SECONDS)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"no answer within {4 * ATTEMPT_SECONDS:g} s") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def check_artifact_store(uri: str, wait_seconds: float) -> dict:
    target = redact(uri)
    entry = {"target": target, "reachable": False, "reason": "", "message": "", "attempts": 0}
    deadline = time.monotonic() + wait_seconds
    delay = 0.5
    while True:
        entry["attempts"] += 1
        try:
            _list_once(uri)
            entry.update(reachable=True, reason="Reachable", message=f"artifact store {target} answered a listing")
            return entry
        except Exception as e:  # every SDK's errors, reported not raised
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                entry["reason"] = classify_storage_error(e)
                entry["message"] = redact(f"artifact store {target}: {type(e).__name__}: {_first_line(e)} "
                                          f"({entry['attempts']} attempts in {wait_seconds:g} s)")
                return entry
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)


def run_init_check(s: Settings) -> dict:
    wait = s.backend_wait_seconds
    report: dict = {"version": 1, "mlflowVersion": mlflow_version(), "entrypoint": __version__, "role": s.role,
                    "databases": [], "artifacts": None}
    for kind, uri in s.database_uris:
        report["databases"].append(check_database(kind, uri, wait))
    # Split mode's metadata pods reach artifacts through the artifacts pods' proxy API: those pods
    # check the store, with the credentials only they hold.
    if s.serve_artifacts and s.artifacts_destination and ARTIFACT_PROXY_API not in s.artifacts_destination:
        report["artifacts"] = check_artifact_store(s.artifacts_destination, wait)
    report["ok"] = all(d["reachable"] for d in report["databases"]) and (
        report["artifacts"] is None or report["artifacts"]["reachable"])
    return report


def summary(report: dict) -> str:
    failed = [d for d in report["databases"] if not d["reachable"]]
    if report["artifacts"] and not report["artifacts"]["reachable"]:
        failed.append(report["artifacts"])
    if failed:
        return "; ".join(f"{d['reason']}: {d['message']}" for d in failed)
    checked = [d["message"] for d in report["databases"]] + ([report["artifacts"]["message"]] if report["artifacts"] else [])
    return "; ".join(checked) or "no external store to check"


def termination_message(report: dict) -> str:
    """Two lines within the kubelet's 4 KiB; long texts are cut, the JSON stays whole."""
    def cut(text: str, limit: int) -> str:
        return text if len(text) <= limit else text[: limit - 3] + "..."

    short = json.loads(json.dumps(report))
    for entry in short["databases"] + ([short["artifacts"]] if short["artifacts"] else []):
        entry["message"] = cut(entry["message"], 300)
        if isinstance(entry.get("schema"), dict) and "error" in entry["schema"]:
            entry["schema"]["error"] = cut(entry["schema"]["error"], 200)
    body = REPORT_PREFIX + json.dumps(short, sort_keys=True, separators=(",", ":"))
    head = cut(SUMMARY_PREFIX + summary(report), max(200, MESSAGE_LIMIT - len(body) - 1))
    return cut(f"{head}\n{body}", MESSAGE_LIMIT)


def write_termination_message(path: str, report: dict) -> None:
    """Into the file the kubelet mounted there; never creates one (outside a pod, e.g. a process
    runner or a shell, stdout has the report and nothing lands in the host's /dev)."""
    try:
        with open(path, "r+") as fh:
            fh.truncate(0)
            fh.write(termination_message(report))
    except OSError:
        pass
