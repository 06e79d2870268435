"""The volume at /data for embedded stores and local artifacts."""
from __future__ import annotations

from typing import Any

from ..api import TrackingServer
from ..constants import RETENTION_ANNOTATION
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
