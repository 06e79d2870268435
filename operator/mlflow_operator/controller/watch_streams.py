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
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

log = logging.getLogger(__name__)

PAUSE_SECONDS = 5.0  # between reconnects of a stream whose kind is gone: not a request loop


def without_managed_fields(event: Any) -> Any:
    """A raw watch event (or Kopf's listing bookmark, passed as it is) without managedFields."""
    obj = event.get("object") if isinstance(event, dict) else None
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return event


def wrapped(continuous_watch: Callable[..., AsyncIterator[Any]], not_found: type[BaseException],
            pause: float = PAUSE_SECONDS) -> Callable[..., AsyncIterator[Any]]:
    async def watch(**kwargs: Any) -> AsyncIterator[Any]:
        try:
            async for event in continuous_watch(**kwargs):
                yield without_managed_fields(event)
        except not_found:
            log.info("%s is no longer served by the API server; its watch-stream pauses until the "
                     "kind returns or Kopf stops watching it", kwargs.get("resource"))
            await asyncio.sleep(pause)

    watch.__wrapped__ = continuous_watch  # type: ignore[attr-defined]
    return watch


def install() -> bool:
    """Wrap Kopf's continuous watch (the function its infinite watch calls by module name), once."""
    try:
        from kopf._cogs.clients import errors, watching
    except ImportError:  # another Kopf layout: keep its behaviour rather than guess
        log.warning("Kopf's watching module moved; a removed CRD may stop the operator, and "
                    "watched objects keep their managedFields")
        return False
    if not hasattr(watching.continuous_watch, "__wrapped__"):
        watching.continuous_watch = wrapped(watching.continuous_watch, errors.APINotFoundError)
    return True
