"""The data volume's claim: created once, then only ever grown.

A PersistentVolumeClaim's size is the one field of it that may change after creation, and only
upwards, and only where its StorageClass allows volume expansion. The operator asks for the larger
size when the spec grows it; the API server (or the storage driver) decides, and the
VolumeResized condition tells which. A smaller size is never applied: a claim cannot shrink, and
the data on it stays as it is.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

from ..api.quantity import parse_quantity as _parse_quantity
from . import kube
from .conditions import Condition
from .kube import ApiException


def parse_quantity(value: str) -> Fraction:
    """A quantity's exact value; ValueError for what is not one (the API server stores only quantities)."""
    parsed = _parse_quantity(value)
    if parsed is None:
        raise ValueError(f"not a quantity: {value!r}")
    return parsed


def _requested(pvc: dict[str, Any]) -> str:
    return ((pvc.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage", "0")


def size_decision(desired: dict[str, Any], live: dict[str, Any]) -> tuple[bool, Condition]:
    """(whether to ask for the desired size, the condition to report). Pure."""
    want, have = _requested(desired), _requested(live)
    name = live["metadata"]["name"]
    capacity = ((live.get("status") or {}).get("capacity") or {}).get("storage")
    if parse_quantity(want) < parse_quantity(have):
        return False, Condition("VolumeResized", False, "ShrinkNotPossible",
                                f"PersistentVolumeClaim {name} requests {have}; spec.storage.size {want} is smaller "
                                f"and a claim cannot shrink (the data stays; set the size back to {have} or larger)")
    if parse_quantity(want) > parse_quantity(have):
        return True, Condition("VolumeResized", True, "ExpansionRequested",
                               f"PersistentVolumeClaim {name}: asked to grow from {have} to {want}")
    if capacity and parse_quantity(capacity) < parse_quantity(want):
        return False, Condition("VolumeResized", True, "ExpansionInProgress",
                                f"PersistentVolumeClaim {name} requests {want}; the volume has {capacity} so far")
    return False, Condition("VolumeResized", True, "AsRequested", f"PersistentVolumeClaim {name} requests {want}")


def ensure_volume_claim(manifest: dict[str, Any]) -> Condition | None:
    """Creates the claim when missing; grows it when the spec asks for more."""
    meta = manifest["metadata"]
    live = kube.get("v1", "PersistentVolumeClaim", meta["namespace"], meta["name"])
    if live is None:
        kube.create(manifest)
        return None
    grow, condition = size_decision(manifest, live)
    if grow:
        try:
            kube.apply({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                "spec": {"resources": {"requests": {"storage": _requested(manifest)}}},
            })
        except ApiException as exc:
            if exc.status not in (403, 422):
                raise
            # Typically: the StorageClass does not set allowVolumeExpansion, or the claim is not bound.
            return Condition("VolumeResized", False, "ExpansionRefused",
                             f"PersistentVolumeClaim {meta['name']} cannot grow to {_requested(manifest)}: "
                             f"{kube.error_message(exc)}")
    return condition
