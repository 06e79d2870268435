"""The migration Job: `mlflow db upgrade` (and the auth database's migration) on the external
databases, once per image and database, before the servers roll.

The reconciler applies it and waits for it to complete before it applies the Deployments. It has
no ttlSecondsAfterFinished: the finished Job is the record that this image's migrations ran
(MigrationsApplied); a new image or database gives a new Job name.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from ..api import TrackingServer
from ..api import derived as d
from . import environment, naming
from .context import RenderContext
from .pod import container, pod_spec, referenced_secrets, volume_mounts, volumes


def needs_migration_job(ts: TrackingServer) -> bool:
    return bool(environment.external_migration_env(ts))


def migration_digest(ts: TrackingServer, context: RenderContext | None = None) -> str:
    """What decides whether migrations must run again: the image, the databases (the Secrets' data
    too: a URI changed in its Secret may name a new, empty database), and the rest of the Job's pod
    template. Job templates are immutable, so any change there needs a new Job (and name); a failed
    Job is retried with a new name as soon as what made it fail changes."""
    pod = _pod_template(ts)
    secrets = {name: (context or RenderContext()).secret_hashes.get(name, "") for name in referenced_secrets(pod["spec"])}
    payload = {"image": naming.image(ts), "env": environment.external_migration_env(ts), "pod": pod, "secrets": secrets}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


DATABASE_DIGEST_ANNOTATION = "mlflow-operator.dev/database-digest"


def database_digest(ts: TrackingServer, context: RenderContext | None = None) -> str:
    """Which databases a migration Job migrates (the migration settings and the referenced Secrets'
    data), without the image: two Jobs with the same digest migrated the same databases, so the
    operator can tell a rollback of the image from a move to another database."""
    pod = _pod_template(ts)
    secrets = {name: (context or RenderContext()).secret_hashes.get(name, "") for name in referenced_secrets(pod["spec"])}
    payload = {"env": environment.external_migration_env(ts), "secrets": secrets}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _pod_template(ts: TrackingServer) -> dict[str, Any]:
    spec = ts.spec
    resources = spec.resources.dump()
    init = []
    if d.backend_type(spec) == "Database" and spec.backend_store.wait_seconds > 0:
        init.append(
            container(ts, "wait-for-backend", "wait-for-backend", environment.backend_wait_env(ts),
                      resources, volume_mounts(False, False))
        )
    migrate = container(ts, "migrate", "migrate", environment.external_migration_env(ts), resources,
                        volume_mounts(False, False))
    pod = pod_spec(ts, [migrate], init, volumes(ts, False, False), restart_policy="Never")
    metadata: dict[str, Any] = {"labels": naming.labels(ts, naming.MIGRATION)}
    if ts.spec.pod_template.annotations:
        # The same pod annotations as the servers' pods (sidecar injection, network policies, ...).
        metadata["annotations"] = dict(sorted(ts.spec.pod_template.annotations.items()))
    return {"metadata": metadata, "spec": pod}


def migration_job(ts: TrackingServer, context: RenderContext | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": naming.object_meta(ts, naming.migration_job_name(ts, migration_digest(ts, context)), naming.MIGRATION,
                                       annotations={DATABASE_DIGEST_ANNOTATION: database_digest(ts, context)[:16]}),
        "spec": {
            # One retry: the wait-for-backend init container already rides out a database that is
            # starting; a migration that fails twice needs a person (the reason is in the status),
            # and the operator retries a failed migration later by itself.
            "backoffLimit": 1,
            "activeDeadlineSeconds": 1800,
            "template": _pod_template(ts),
        },
    }
