"""The volume at /data for embedded stores and local artifacts."""
from __future__ import annotations

from typing import Any

import json

from ..api import TrackingServer
from ..api import derived as d
from ..constants import DATA_LOCATIONS_ANNOTATION, RETENTION_ANNOTATION
from . import naming


def volume_claim(ts: TrackingServer) -> dict[str, Any]:
    storage = ts.spec.storage
    spec: dict[str, Any] = {
        "accessModes": list(storage.access_modes),
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        # Not owned unless retentionPolicy is Delete: garbage collection must never delete a
        # team's experiments because a TrackingServer was deleted (or re-created by GitOps).
        "metadata": naming.object_meta(
            ts,
            naming.volume_claim_name(ts),
            naming.TRACKING,
            owned=ts.spec.retention_policy == "Delete",
            annotations={RETENTION_ANNOTATION: ts.spec.retention_policy},
        ),
        "spec": spec,
    }


def data_locations(ts: TrackingServer) -> dict[str, str]:
    """Where this spec keeps runs and artifacts, in words (no URI from a Secret, only its reference).
    Recorded on the tracking Deployment, so the operator can tell when a spec change points the
    server at other stores, which it never copies data into."""
    spec = ts.spec
    out: dict[str, str] = {}
    backend = d.backend_type(spec)
    if backend in ("SQLite", "FileStore"):
        out["backendStore"] = f"{backend} on PersistentVolumeClaim {naming.volume_claim_name(ts)}"
    elif backend == "Database":
        ref = spec.backend_store.uri.secret_key_ref
        out["backendStore"] = f"the database in Secret {ref.name} key {ref.key}"
    artifacts = spec.artifacts.default_artifact_root if spec.artifacts.mode == "Direct" else d.artifacts_destination(spec)
    if artifacts:
        out["artifacts"] = artifacts if "://" in artifacts else f"{artifacts} on PersistentVolumeClaim {naming.volume_claim_name(ts)}"
    return out


def data_locations_annotation(ts: TrackingServer) -> dict[str, str]:
    return {DATA_LOCATIONS_ANNOTATION: json.dumps(data_locations(ts), sort_keys=True)}
