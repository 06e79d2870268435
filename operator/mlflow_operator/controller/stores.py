"""Reachability of a TrackingServer's database and artifact store, observed where the pods run.

The operator opens no connection to a team's stores. Every server pod's `check` init container
connects from the pod's own network position (its namespace's DNS, the NetworkPolicies that admit
the team's pods, the credentials the server uses) with a full client handshake, and its
termination message carries the result (podmessages.check_result). The conditions say what the
pods of the Deployment's current pod template found:

- a pod whose check failed makes the condition False with the check's reason and message;
- a pod whose check passed makes it True (an image without the report, e.g. kwok's fake pods,
  says only that it passed);
- with no pod that has finished its check yet, the condition is Unknown;
- once the servers run, a database that stops answering them fails their readiness probe (the
  image's /readyz queries it): a started server that stays unready makes BackendReachable False.

What needs no pod is decided from the spec and the Secret: no backend (artifacts-only), embedded
stores on the volume, a Secret or key that is missing, a database the image has no driver for.
Messages name hosts, ports and database names, never a password (the entrypoint redacts, and
podmessages masks URI passwords once more).
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from ..api import TrackingServer
from ..api import derived as d
from ..constants import CONFIG_HASH_ANNOTATION
from .conditions import Condition
from .podmessages import CheckResult, check_result
from .reachability import unsupported_database

SERVER_CONTAINER = "mlflow"
BACKEND = "BackendReachable"
ARTIFACTS = "ArtifactStoreReachable"


def current_pods(deployment: dict[str, Any] | None, pods: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods of the Deployment's current pod template (its config hash), newest first."""
    if deployment is None:
        return []
    want = (((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations", {}).get(
        CONFIG_HASH_ANNOTATION)
    out = [p for p in pods if not p["metadata"].get("deletionTimestamp")
           and (p["metadata"].get("annotations") or {}).get(CONFIG_HASH_ANNOTATION) == want]
    return sorted(out, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]), reverse=True)


def _results(pods: list[dict[str, Any]]) -> list[CheckResult]:
    return [r for r in map(check_result, pods) if r is not None]


def from_pods(type_: str, what: str, deployment: str, pods: list[dict[str, Any]],
              entry_of: Callable[[dict], list[dict]]) -> Condition:
    """The condition the pods' checks give for one store (`entry_of` picks its entries of a report)."""
    results = _results(pods)
    failed = [r for r in results if not r.passed]
    for result in failed:
        entries = entry_of(result.report) if result.report else []
        bad = [e for e in entries if not e["reachable"]]
        if bad:
            return Condition(type_, False, bad[0]["reason"], f"pod {result.pod}: " + "; ".join(e["message"] for e in bad))
        if result.report is None:
            # Failed before it could say which store (a configuration error, an image without the
            # report): not known to be this store; Available says what the pod's problem is.
            return Condition(type_, None, "CheckFailed", f"the check of pod {result.pod} failed: {result.summary}")
    passed = [r for r in results if r.passed]
    if passed:
        newest = next((r for r in passed if r.report), passed[0])  # the one that says what it checked
        entries = entry_of(newest.report) if newest.report else []
        detail = "; ".join(e["message"] for e in entries) if entries else f"the check of pod {newest.pod} passed"
        return Condition(type_, True, "Reachable", f"checked from the pods: {detail}")
    if failed:  # failed on another store only: this one answered
        entries = [e for r in failed if r.report for e in entry_of(r.report)]
        if entries:
            return Condition(type_, True, "Reachable", "checked from the pods: " + "; ".join(e["message"] for e in entries))
    return Condition(type_, None, "NotCheckedYet", f"no pod of Deployment {deployment} has checked the {what} yet")


def backend_condition(ts: TrackingServer, secret_value: Callable[[str, str], str | None],
                      deployment: str, pods: list[dict[str, Any]], now: dt.datetime | None = None) -> Condition:
    spec = ts.spec
    if not d.has_backend(spec):
        return Condition(BACKEND, True, "NotApplicable", "an artifacts-only server has no backend store")
    if d.backend_type(spec) != "Database":
        return Condition(BACKEND, True, "Embedded", f"{d.backend_type(spec)} on the TrackingServer's volume")
    ref = spec.backend_store.uri.secret_key_ref
    uri = secret_value(ref.name, ref.key)
    if uri is None:
        return Condition(BACKEND, False, "SecretNotFound", f"Secret {ref.name} key {ref.key} not found")
    problem = unsupported_database(uri)
    if problem:
        return Condition(BACKEND, False, "UnsupportedDatabase", f"the URI in Secret {ref.name} key {ref.key}: {problem}")
    unready = readiness_failing(pods, now)
    if unready:
        return Condition(BACKEND, False, "DatabaseNotAnswering",
                         f"the server's readiness check, a query on {describe_database(uri)}, fails in pod "
                         f"{unready[0]} (the database does not answer the pods, or the server is overloaded)")
    return from_pods(BACKEND, "database", deployment, pods, lambda report: report["databases"])


# A server container that started (its startup probe passed) and is still not ready this long after
# it started fails its readiness probe (/readyz: a query on the database), not a slow start.
READINESS_GRACE_SECONDS = 60


def readiness_failing(pods: list[dict[str, Any]], now: dt.datetime | None = None) -> list[str]:
    """Names of the pods whose server fails its readiness probe."""
    now = now or dt.datetime.now(dt.timezone.utc)
    out = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            running = (cs.get("state") or {}).get("running")
            if cs.get("name") != SERVER_CONTAINER or not running or not cs.get("started") or cs.get("ready"):
                continue
            started = _time(running.get("startedAt"))
            if started and (now - started).total_seconds() >= READINESS_GRACE_SECONDS:
                out.append(pod["metadata"]["name"])
    return out


def _time(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def describe_database(uri: str) -> str:
    """``dialect host:port/db`` of a URI, for a message: never the user or password."""
    parts = urlsplit(uri)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme.split('+', 1)[0]} {parts.hostname or '?'}{port}{parts.path}"


def artifact_condition(ts: TrackingServer, deployment: str, pods: list[dict[str, Any]]) -> Condition:
    spec = ts.spec
    if spec.artifacts.mode == "Direct":
        return Condition(ARTIFACTS, True, "ClientsWriteDirectly",
                         f"clients write to {spec.artifacts.default_artifact_root} with their own credentials; "
                         "the server does not proxy it")
    target = d.artifacts_destination(spec)
    if not target or target.startswith("/"):
        return Condition(ARTIFACTS, True, "Volume", f"artifacts are stored on the TrackingServer's volume at {target}")
    return from_pods(ARTIFACTS, "artifact store", deployment, pods,
                     lambda report: [report["artifacts"]] if report["artifacts"] else [])


def reported_version(pods: list[dict[str, Any]]) -> str | None:
    """The MLflow version the ready pods' checks reported (what serves), newest pod first."""
    for pod in pods:
        if not _ready(pod):
            continue
        result = check_result(pod)
        if result and result.report and result.report.get("mlflowVersion"):
            return result.report["mlflowVersion"]
    return None


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions") or [])
