"""Status conditions as the Kubernetes API conventions define them (pure functions, no API calls)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None is "Unknown"
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        return {True: "True", False: "False", None: "Unknown"}[self.status]


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    existing: list[dict] | None, observed: list[Condition], generation: int, now: str | None = None
) -> list[dict]:
    """Returns the new conditions list.

    lastTransitionTime moves only when a condition's status changes, so `kubectl describe` tells how long a
    state has lasted. Conditions not observed this pass are kept as they were: a step that could not run
    (for example because an earlier one failed) must not erase what is known.
    """
    now = now or now_rfc3339()
    by_type = {c.get("type"): dict(c) for c in existing or [] if c.get("type")}
    for cond in observed:
        old = by_type.get(cond.type)
        changed = old is None or old.get("status") != cond.status_text
        by_type[cond.type] = {
            "type": cond.type,
            "status": cond.status_text,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),
            "observedGeneration": generation,
        }
    return sorted(by_type.values(), key=lambda c: CONDITION_ORDER.get(c["type"], len(CONDITION_ORDER)))


# Ready first: it is the summary a person reads.
CONDITION_ORDER = {
    name: index
    for index, name in enumerate(
        [
            "Ready",
            "Available",
            "Progressing",
            "Degraded",
            "Reconciled",
            "MigrationsApplied",
            "BackendReachable",
            "ArtifactStoreReachable",
            "RoutesAccepted",
            "DataInPlace",
            "DataRetained",
            "VolumeResized",
        ]
    )
}


def keep_only(conditions: list[dict], producible: set[str]) -> list[dict]:
    """Drops conditions the current spec can no longer produce (a VolumeResized once there is no
    volume): kept, they would describe an old generation forever."""
    return [c for c in conditions if c.get("type") in producible]


def find(conditions: list[dict] | None, type_: str) -> dict | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
