"""Whether the data is where the spec says: spec changes the operator cannot honour, or that point
the server at other stores, are reported (DataInPlace=False and a Warning event), never silent.

- A claim's access modes and storage class cannot change after creation: the volume keeps them.
- A new backend store or artifact destination is used as given, but the operator copies nothing:
  the runs and artifacts logged so far stay where they were.
"""
from __future__ import annotations

import json
from typing import Any

from ..constants import DATA_LOCATIONS_ANNOTATION
from . import kube
from .conditions import Condition, find

MOVE_REASONS = ("BackendStoreChanged", "ArtifactDestinationChanged")


def _volume_differences(desired: dict[str, Any], live: dict[str, Any]) -> list[str]:
    name = live["metadata"]["name"]
    want, have = desired.get("spec") or {}, live.get("spec") or {}
    out = []
    if sorted(want.get("accessModes") or []) != sorted(have.get("accessModes") or []):
        out.append(f"spec.storage.accessModes {want.get('accessModes')} is not applied: PersistentVolumeClaim {name} keeps "
                   f"{have.get('accessModes')} (a claim's access modes cannot change); the data stays on that volume")
    if want.get("storageClassName") and want.get("storageClassName") != have.get("storageClassName"):
        out.append(f"spec.storage.storageClassName {want['storageClassName']} is not applied: PersistentVolumeClaim {name} "
                   f"keeps class {have.get('storageClassName') or '(none)'} (it cannot change); the data stays on that volume")
    return out


def _location_changes(desired: dict[str, Any], live: dict[str, Any]) -> list[tuple[str, str]]:
    raw_live = (live["metadata"].get("annotations") or {}).get(DATA_LOCATIONS_ANNOTATION)
    raw_want = (desired["metadata"].get("annotations") or {}).get(DATA_LOCATIONS_ANNOTATION)
    if not raw_live or not raw_want:
        return []  # a Deployment from before this annotation: nothing known to compare with
    was, now = json.loads(raw_live), json.loads(raw_want)
    out = []
    if was.get("backendStore") != now.get("backendStore") and was.get("backendStore"):
        out.append(("BackendStoreChanged",
                    f"the backend store moves from {was['backendStore']} to {now.get('backendStore') or 'none'}: the "
                    "operator copies no data, so the experiments and runs logged so far stay in the old store and the "
                    "server shows only what is in the new one (export and import them to move them)"))
    if was.get("artifacts") != now.get("artifacts") and was.get("artifacts"):
        out.append(("ArtifactDestinationChanged",
                    f"the artifact destination moves from {was['artifacts']} to {now.get('artifacts') or 'none'}: the "
                    "operator copies nothing; artifacts logged so far stay there, and runs that recorded "
                    "mlflow-artifacts:/ URIs now resolve under the new destination, so copy the old objects over to "
                    "keep them readable"))
    return out


def data_in_place(manifests: list[dict[str, Any]], previous: list[dict[str, Any]], generation: int) -> Condition:
    problems: list[tuple[str, str]] = []
    for m in manifests:
        meta = m["metadata"]
        if m["kind"] == "PersistentVolumeClaim":
            live = kube.get("v1", "PersistentVolumeClaim", meta["namespace"], meta["name"])
            if live:
                problems += [("VolumeSpecNotApplied", text) for text in _volume_differences(m, live)]
        elif m["kind"] == "Deployment" and DATA_LOCATIONS_ANNOTATION in (meta.get("annotations") or {}):
            live = kube.get("apps/v1", "Deployment", meta["namespace"], meta["name"])
            if live:
                problems += _location_changes(m, live)
    if problems:
        return Condition("DataInPlace", False, problems[0][0], "; ".join(text for _, text in problems))
    old = find(previous, "DataInPlace")
    if old and old.get("status") == "False" and old.get("reason") in MOVE_REASONS and old.get("observedGeneration") == generation:
        # Once the Deployment rolled onto the new stores nothing differs any more, but what this
        # generation did to the data stays said until the spec changes again.
        return Condition("DataInPlace", False, old["reason"], old.get("message", ""))
    return Condition("DataInPlace", True, "AsSpecified", "the data is in the stores the spec names")
