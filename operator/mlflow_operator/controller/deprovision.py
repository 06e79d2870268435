"""What a TrackingServer's class provisioned goes with it, under retentionPolicy Delete only.

A finalizer (FINALIZER) holds the deletion of such a server until its database, role or user and
MinIO user, policy and objects are dropped. It is put only where it is needed: a server whose
class provisions something and whose effective retentionPolicy is Delete. Retain never gets it,
and a server switched to Retain loses it: its deletion never waits for the operator, and nothing
of it is ever dropped.

When dropping cannot be done (the class is gone, its admin Secret is missing, the database or
MinIO is down), the deletion waits with condition Deprovisioned=False and a Warning event that
say why and how to release it: set spec.retentionPolicy to Retain (the operator lets the
deletion finish and keeps everything), or, with no operator running, remove the finalizer by hand.
"""
from __future__ import annotations

from typing import Any, Callable

from ..api import InvalidTrackingServer, TrackingServer, TrackingServerClass
from ..constants import API_VERSION, GROUP
from ..crd import trackingserver_schema
from ..render.classes import apply_class
from . import kube
from .kube import ApiException
from .conditions import Condition, merge_conditions
from .provisioning import DEPROVISIONED, ProvisioningBlocked, drop_provisioned

FINALIZER = f"{GROUP}/deprovision"
EventFn = Callable[[str, str, str], None]


def provisions(cls: TrackingServerClass | None) -> bool:
    return cls is not None and (cls.spec.database is not None
                                or (cls.spec.artifacts is not None and cls.spec.artifacts.minio is not None))


def wants_finalizer(ts: TrackingServer, cls: TrackingServerClass | None) -> bool:
    return provisions(cls) and ts.spec.retention_policy == "Delete"


def has_finalizer(body: dict[str, Any]) -> bool:
    return FINALIZER in ((body.get("metadata") or {}).get("finalizers") or [])


def set_finalizer(body: dict[str, Any], wanted: bool) -> None:
    """Adds or removes our finalizer, conditional on the resourceVersion read: a concurrent
    change wins and the next pass decides again."""
    meta = body["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    if (FINALIZER in finalizers) == wanted:
        return
    finalizers = finalizers + [FINALIZER] if wanted else [f for f in finalizers if f != FINALIZER]
    try:
        kube.patch(API_VERSION, "TrackingServer", meta["namespace"], meta["name"],
                   {"metadata": {"finalizers": finalizers or None, "resourceVersion": meta.get("resourceVersion")}})
    except ApiException as exc:
        if exc.status not in (404, 409):
            raise


RELEASE_HINT = ("to keep everything and let the deletion finish, set spec.retentionPolicy to Retain; with no "
                "operator running, remove the finalizer: kubectl patch trackingserver {name} -n {namespace} "
                "--type json -p '[{{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}}]'")


def finalize(body: dict[str, Any], cls: TrackingServerClass | None, class_name: str | None,
             load: Callable[[dict[str, Any]], TrackingServer], emit: EventFn) -> tuple[dict[str, Any], float | None]:
    """A TrackingServer being deleted that carries our finalizer: drop what its class provisioned
    (Delete) or nothing (Retain), then release it. Returns the status to write and when to retry."""
    meta = body["metadata"]
    status = dict(body.get("status") or {})
    try:  # the spec it ran with: a class may set retentionPolicy
        ts = load(apply_class(body, cls, trackingserver_schema()["properties"]["spec"]).body if cls else body)
    except InvalidTrackingServer:  # the class changed since into one this spec cannot work with
        ts = load(body)
    hint = RELEASE_HINT.format(name=meta["name"], namespace=meta["namespace"])
    if ts.spec.retention_policy != "Delete":
        set_finalizer(body, False)
        emit("Normal", "Retained", "retentionPolicy Retain: what the class provisioned is kept")
        return status, None
    if cls is None or not provisions(cls):
        condition = Condition(DEPROVISIONED, False, "ClassNotFound",
                              f"TrackingServerClass {class_name} is gone or provisions nothing now: the operator "
                              f"cannot reach what it provisioned to drop it; re-create the class, or {hint}")
    else:
        try:
            dropped = drop_provisioned(ts, cls)
        except ProvisioningBlocked as blocked:
            condition = Condition(DEPROVISIONED, False, blocked.condition.reason,
                                  f"{blocked.condition.message}; the deletion waits until this works, or {hint}")
        else:
            set_finalizer(body, False)
            emit("Normal", "Deprovisioned", f"retentionPolicy Delete: dropped {dropped}")
            return status, None
    previous = status.get("conditions") or []
    conditions = merge_conditions(previous, [condition], meta.get("generation", 0))
    old = next((c for c in previous if c["type"] == DEPROVISIONED), None)
    if not old or old.get("reason") != condition.reason or old.get("status") != "False":
        emit("Warning", condition.reason, f"{DEPROVISIONED}: {condition.message}")
    status["conditions"] = conditions
    return status, 30.0
