"""Which objects are this TrackingServer's, and whether its data outlives it.

One predicate decides what the operator may delete (pruning, superseded migration Jobs): the
object carries the operator's managed-by label AND an owner reference to this TrackingServer's
uid. A label alone is not enough: a Helm release or a person can use the same instance and
component labels, and their objects are not ours to delete.

Data-bearing children (the volume claim and the generated Secrets) are owned, and so garbage
collected with the TrackingServer, only while `retentionPolicy: Delete` says so. The policy can
change at any time, in both directions, so their owner references and retention annotation are
set to what the current policy says on every pass, not only when they are created.
"""
from __future__ import annotations

from typing import Any

from ..api import TrackingServer
from ..constants import GROUP, KIND, OWNER_NAMESPACE_LABEL, OWNER_UID_ANNOTATION, RETENTION_ANNOTATION
from ..render import naming
from ..render.classes import artifacts_secret_name, database_secret_name
from . import kube
from .conditions import Condition

MANAGED_BY = ("app.kubernetes.io/managed-by", "mlflow-operator")


def managed(obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY[0]) == MANAGED_BY[1]


def owned_by(ts: TrackingServer, obj: dict[str, Any]) -> bool:
    """The operator created this object for this TrackingServer (and may delete it)."""
    if not ts.metadata.uid or not managed(obj):
        return False
    meta = obj.get("metadata") or {}
    if obj.get("kind") in kube.CLUSTER_SCOPED_KINDS:
        # No owner reference can point from a cluster-scoped object to a namespaced one.
        return ((meta.get("labels") or {}).get(OWNER_NAMESPACE_LABEL) == ts.namespace
                and (meta.get("annotations") or {}).get(OWNER_UID_ANNOTATION) == ts.metadata.uid)
    refs = meta.get("ownerReferences") or []
    return any(ref.get("uid") == ts.metadata.uid for ref in refs)


def delete_owned(ts: TrackingServer, api_version: str, kind: str, obj: dict[str, Any]) -> bool:
    """Deletes an object only if `owned_by` holds for what was read, and only that very object."""
    if not owned_by(ts, obj):
        return False
    meta = obj["metadata"]
    return kube.delete(api_version, kind, ts.namespace, meta["name"], uid=meta.get("uid"))


def _refers_to_a_trackingserver_named(ref: dict[str, Any], name: str) -> bool:
    # Any uid: a reference left by an earlier TrackingServer of the same name counts too. Left in
    # place on a retained object, it would let garbage collection delete the data once that
    # earlier owner is gone.
    return ref.get("kind") == KIND and str(ref.get("apiVersion", "")).split("/")[0] == GROUP and ref.get("name") == name


def data_children(ts: TrackingServer) -> list[tuple[str, str]]:
    """(kind, name) of every object that can hold this TrackingServer's data, needed by the spec now or not."""
    return [
        ("PersistentVolumeClaim", naming.volume_claim_name(ts)),
        ("Secret", naming.admin_secret_name(ts)),
        ("Secret", naming.flask_secret_name(ts)),
        # A class's provisioned database: its URIs go with the server only under Delete...
        ("Secret", database_secret_name(ts.name)),
        ("Secret", artifacts_secret_name(ts.name)),  # and its MinIO keys
    ]


def retention_metadata(ts: TrackingServer, live: dict[str, Any]) -> dict[str, Any] | None:
    """The metadata patch that makes a live data-bearing object follow the retention policy, or None. Pure."""
    meta = live.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    keep = [r for r in refs if not _refers_to_a_trackingserver_named(r, ts.name)]
    wanted = keep + (naming.owner_references(ts) if ts.spec.retention_policy == "Delete" else [])
    annotation = (meta.get("annotations") or {}).get(RETENTION_ANNOTATION)
    if refs == wanted and annotation == ts.spec.retention_policy:
        return None
    return {
        # Optimistic concurrency: a patch against an object that changed meanwhile is refused (409)
        # and the next pass reads it again.
        "resourceVersion": meta.get("resourceVersion"),
        "ownerReferences": wanted,
        "annotations": {RETENTION_ANNOTATION: ts.spec.retention_policy},
    }


def reconcile_retention(ts: TrackingServer) -> Condition:
    """Owner references and retention annotation of every data-bearing child, as the policy says now."""
    found = []
    for kind, name in data_children(ts):
        live = kube.get("v1", kind, ts.namespace, name)
        if live is None or not managed(live) or (live["metadata"].get("labels") or {}).get("app.kubernetes.io/instance") != ts.name:
            continue  # absent, or not the operator's (a Secret the user made and references)
        patch = retention_metadata(ts, live)
        if patch is not None:
            kube.patch("v1", kind, ts.namespace, name, {"metadata": patch})
        found.append(f"{kind} {name}")
    if not found:
        return Condition("DataRetained", True, "NoData", "no volume or generated Secret exists for this TrackingServer")
    listing = ", ".join(found)
    if ts.spec.retention_policy == "Delete":
        return Condition("DataRetained", False, "DeletedWithServer",
                         f"retentionPolicy Delete: {listing} will be deleted with this TrackingServer")
    return Condition("DataRetained", True, "Retained",
                     f"retentionPolicy Retain: {listing} are kept when this TrackingServer is deleted "
                     "(not owned by it) and re-attached by one re-created with the same name")
