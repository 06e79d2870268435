"""Migrations before rollout.

The migration Job is named by a digest of the image and the databases it migrates, so a new image or
database gets a new Job and a finished Job is the record that this combination was migrated. The
Deployments are applied only once that Job has succeeded: while it runs, or after it failed, the old
Deployment (old image) keeps serving and is not touched. Never two migration Jobs of one
TrackingServer run at once: a superseded Job that still runs is deleted first, and the next pass
starts the new one once it is gone. The image's `migrate` also takes a database lock, so even two
operators could not migrate concurrently.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable

import re

from ..api import TrackingServer
from ..api import derived as d
from ..render import naming
from ..render.job import DATABASE_DIGEST_ANNOTATION
from . import kube, metrics
from .conditions import Condition
from .ownership import delete_owned, owned_by
from .podmessages import entrypoint_message

# A failed migration is retried (the Job deleted and created anew) after this long, so a database that
# was down recovers without anyone deleting Jobs by hand. A spec fix retries at once (new Job name).
FAILED_RETRY_SECONDS = 300


@dataclass(frozen=True)
class MigrationGate:
    open: bool
    condition: Condition
    state: str  # NotNeeded | Running | Succeeded | Failed | Waiting | Refused
    requeue_after: float | None = None


def _job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next(
        (c for c in (job.get("status") or {}).get("conditions") or [] if c.get("type") == type_ and c.get("status") == "True"),
        None,
    )


def job_state(job: dict[str, Any]) -> str:
    if _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet"):
        return "Succeeded"
    if _job_condition(job, "Failed") or _job_condition(job, "FailureTarget"):
        return "Failed"
    return "Running"


def failure_message(job: dict[str, Any]) -> str:
    """The Job's reason, plus what its last pod said when it ended (exit code, termination message)."""
    cond = _job_condition(job, "Failed") or _job_condition(job, "FailureTarget") or {}
    parts = [f"{cond.get('reason', 'Failed')}: {cond.get('message', '')}".strip()]
    pods = kube.list_objects("v1", "Pod", job["metadata"]["namespace"], f"batch.kubernetes.io/job-name={job['metadata']['name']}")
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
    for pod in reversed(pods):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")
            if term and term.get("exitCode"):
                detail = (entrypoint_message(term.get("message")) or term.get("reason") or "").strip()
                parts.append(f"container {status['name']} exited {term['exitCode']}" + (f": {detail[-500:]}" if detail else ""))
                return "; ".join(parts)
    return "; ".join(parts)


def _failed_seconds_ago(job: dict[str, Any]) -> float:
    cond = _job_condition(job, "Failed") or {}
    stamp = cond.get("lastTransitionTime")
    if isinstance(stamp, str):
        stamp = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if not stamp:
        return 0.0
    return (dt.datetime.now(dt.timezone.utc) - stamp).total_seconds()


def gate_migrations(ts: TrackingServer, manifests: list[dict[str, Any]], emit: Callable[[str, str, str], None]) -> MigrationGate:
    job = next((m for m in manifests if m["kind"] == "Job"), None)
    if job is None:
        if not d.has_backend(ts.spec):
            why = "an artifacts-only server has no database"
        else:
            why = "the embedded database is migrated by each pod's init container before its server starts"
        return MigrationGate(True, Condition("MigrationsApplied", True, "NotNeeded", why), "NotNeeded")

    name = job["metadata"]["name"]
    selector = f"app.kubernetes.io/instance={ts.name},app.kubernetes.io/component=migration"
    # Only the operator's own Jobs: a Helm release or a person may label theirs the same way.
    jobs = {j["metadata"]["name"]: j for j in kube.list_objects("batch/v1", "Job", ts.namespace, selector) if owned_by(ts, j)}
    current = jobs.pop(name, None)

    superseded_running = [n for n, j in jobs.items() if job_state(j) == "Running" and not j["metadata"].get("deletionTimestamp")]
    for other in superseded_running:
        delete_owned(ts, "batch/v1", "Job", jobs[other])
        emit("Normal", "MigrationSuperseded", f"Stopped migration Job {other}: the spec changed before it finished")
    stopping = [n for n, j in jobs.items() if job_state(j) == "Running"]
    if stopping:
        return MigrationGate(False, Condition("MigrationsApplied", False, "MigrationWaiting",
                                              f"waiting for superseded migration Job {stopping[0]} to stop"), "Waiting", 2)

    if current is None:
        refusal = rollback_refusal(job, jobs.values())
        if refusal:
            return MigrationGate(False, Condition("MigrationsApplied", False, "RollbackRefused", refusal), "Refused")
        kube.apply(job)
        metrics.MIGRATIONS.labels("created").inc()
        emit("Normal", "MigrationStarted", f"Started migration Job {name} for image {_image(job)}")
        return MigrationGate(False, Condition("MigrationsApplied", False, "MigrationRunning",
                                              f"migration Job {name} is running; the servers roll out when it succeeds"), "Running")

    state = job_state(current)
    if state == "Succeeded":
        for old in jobs.values():  # earlier migrations' records, superseded by this one
            delete_owned(ts, "batch/v1", "Job", old)
        return MigrationGate(True, Condition("MigrationsApplied", True, "Migrated",
                                             f"migration Job {name} succeeded for image {_image(job)}"), "Succeeded")
    if state == "Failed":
        message = failure_message(current)
        if any(marker in message for marker in DOWNGRADE_REFUSED):
            # The image's `migrate` found a schema newer than it knows: retrying cannot help.
            return MigrationGate(False, Condition("MigrationsApplied", False, "RollbackRefused",
                                                  f"migration Job {name}: {message}; {ROLLBACK_ADVICE}"), "Refused")
        waited = _failed_seconds_ago(current)
        if waited >= FAILED_RETRY_SECONDS:
            delete_owned(ts, "batch/v1", "Job", current)
            metrics.MIGRATIONS.labels("retried").inc()
            return MigrationGate(False, Condition("MigrationsApplied", False, "MigrationFailed",
                                                  f"migration Job {name} failed, retrying now: {message}"), "Failed", 5)
        return MigrationGate(
            False,
            Condition("MigrationsApplied", False, "MigrationFailed",
                      f"migration Job {name} failed; the previous version keeps serving; "
                      f"retry in {int(FAILED_RETRY_SECONDS - waited)} s or fix the spec: {message}"),
            "Failed",
            max(5.0, FAILED_RETRY_SECONDS - waited),
        )
    return MigrationGate(False, Condition("MigrationsApplied", False, "MigrationRunning",
                                          f"migration Job {name} is running; the servers roll out when it succeeds"), "Running")


# What the image's `migrate` says when the database was migrated by a newer MLflow (db.py).
DOWNGRADE_REFUSED = ("downgrades are refused", "migrated by a newer MLflow")
ROLLBACK_ADVICE = ("MLflow cannot downgrade a database schema, so the version that migrated it keeps serving; "
                   "set spec.image back to that version, or restore the database from the backup taken before the "
                   "upgrade and then delete the newer migration Job so the operator migrates again")
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def _version(image: str) -> tuple[int, ...] | None:
    match = _VERSION.match(naming.image_version(image) or "")
    return tuple(int(part or 0) for part in match.groups()) if match else None


def rollback_refusal(job: dict[str, Any], others: Any) -> str | None:
    """Why the new Job must not run: a Job of this TrackingServer already migrated the same databases
    with a newer MLflow (the image tags tell the versions). None when that is not known."""
    digest = (job["metadata"].get("annotations") or {}).get(DATABASE_DIGEST_ANNOTATION)
    wanted = _version(_image(job))
    if not digest or wanted is None:
        return None
    for other in others:
        same_databases = (other["metadata"].get("annotations") or {}).get(DATABASE_DIGEST_ANNOTATION) == digest
        migrated = _version(_image(other))
        if same_databases and job_state(other) == "Succeeded" and migrated is not None and migrated > wanted:
            return (f"image {_image(job)} is older than {_image(other)}, which migrated these databases "
                    f"(migration Job {other['metadata']['name']}); {ROLLBACK_ADVICE}")
    return None


def _image(job: dict[str, Any]) -> str:
    return job["spec"]["template"]["spec"]["containers"][0]["image"]
