"""Where the operator's watch-streams differ from Kopf's: one wrapper of Kopf's continuous watch.

- **A removed kind ends its stream, not the operator.** The operator watches optional kinds
  (ServiceMonitor, HTTPRoute) when their CRDs are installed. When such a CRD is deleted, Kopf's
  resource observer stops that watcher, but a watch-stream that reconnects first gets "404 page
  not found", and Kopf 1.45 treats any error of a stream as fatal: the whole operator exits (in a
  pod: a restart; in every case, every TrackingServer's reconciles stop until then). Here a 404
  ends that one stream instead; Kopf reconnects it after a pause, and stops it for good once the
  kind has left discovery.
- **Objects arrive without managedFields.** Kopf hands each watched object whole to a task of its
  own, and after a start it holds every listed object of every kind until all kinds are listed
  (its indexes must be complete before any handler runs). managedFields are about half of an
  object's size, and the operator never reads them from a watch: the one check that needs them
  (reconcile.py, a field another manager took over) GETs the object from the API server.
  Measured with bench-operator at N=500: the process restarted over converged servers peaked at
  233 MB with them, 216 MB without.
- **A cached child reaches Kopf as its compact text.** For the kinds the operator keeps in its
  watch cache (handlers.CACHED_CHILDREN), the handlers read the object's identity and labels, and
  the index keeps the object as compact JSON text (kube.compact). Kopf's per-object task, however,
  holds the decoded object while it waits for every kind's listing, so after a start the whole
  cluster's children were held as Python dicts (about ten times their JSON) at once: at N=250, 33 MB
  of the 92 MB a restart peaked at (tracemalloc). Here such an object is made compact text as it
  arrives, and what Kopf holds is its identity (`slim`), the text under COMPACT_KEY beside it; the
  decoded listing is freed object by object, because the object is emptied in place.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from .kube import compact

log = logging.getLogger(__name__)

PAUSE_SECONDS = 5.0  # between reconnects of a stream whose kind is gone: not a request loop


# Where a slimmed object keeps its compact text: not a field of any Kubernetes object (an API
# object's top-level keys are plain words), so it cannot shadow one.
COMPACT_KEY = "mlflow-operator.dev/compact"
# What Kopf and the handlers read of a cached child's metadata: identity, labels (the owner), and
# what Kopf checks before it calls an event handler (deletion, finalizers).
SLIM_METADATA = ("name", "namespace", "uid", "resourceVersion", "generation", "labels",
                 "deletionTimestamp", "finalizers")
OBJECT_EVENTS = (None, "ADDED", "MODIFIED", "DELETED")  # None: an object of the initial listing


def slim(obj: dict) -> dict:
    """The object emptied in place down to its identity and labels, its compact text beside them."""
    text = compact(obj)
    meta = obj.get("metadata") or {}
    kept = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
            "metadata": {k: meta[k] for k in SLIM_METADATA if k in meta}, COMPACT_KEY: text}
    obj.clear()  # in place: the listing that holds this dict frees the rest now, not at its end
    obj.update(kept)
    return obj


def slimmed(event: Any, compacted: bool) -> Any:
    """A raw watch event without managedFields, or, for a compacted kind, with its object slimmed;
    anything else (Kopf's listing bookmark, an ERROR's Status) as it came."""
    if not isinstance(event, dict) or not isinstance(obj := event.get("object"), dict):
        return event
    if compacted and event.get("type") in OBJECT_EVENTS and isinstance(obj.get("metadata"), dict):
        slim(obj)
    elif isinstance(meta := obj.get("metadata"), dict):
        meta.pop("managedFields", None)
    return event


def wrapped(continuous_watch: Callable[..., AsyncIterator[Any]], not_found: type[BaseException],
            pause: float = PAUSE_SECONDS,
            compacted: Callable[[Any], bool] = lambda resource: False) -> Callable[..., AsyncIterator[Any]]:
    async def watch(**kwargs: Any) -> AsyncIterator[Any]:
        compact_this = compacted(kwargs.get("resource"))
        try:
            async for event in continuous_watch(**kwargs):
                yield slimmed(event, compact_this)
        except not_found:
            log.info("%s is no longer served by the API server; its watch-stream pauses until the "
                     "kind returns or Kopf stops watching it", kwargs.get("resource"))
            await asyncio.sleep(pause)

    watch.__wrapped__ = continuous_watch  # type: ignore[attr-defined]
    return watch


def install(compacted: Callable[[Any], bool] = lambda resource: False) -> bool:
    """Wrap Kopf's continuous watch (the function its infinite watch calls by module name), once.
    `compacted(resource)` says which kinds reach Kopf slimmed (their handlers read COMPACT_KEY)."""
    try:
        from kopf._cogs.clients import errors, watching
    except ImportError:  # another Kopf layout: keep its behaviour rather than guess
        log.warning("Kopf's watching module moved; a removed CRD may stop the operator, and "
                    "watched objects keep their managedFields")
        return False
    if not hasattr(watching.continuous_watch, "__wrapped__"):
        watching.continuous_watch = wrapped(watching.continuous_watch, errors.APINotFoundError, compacted=compacted)
    return True
