"""Keep the operator running when a kind it watches is removed from the cluster.

The operator watches optional kinds (ServiceMonitor, HTTPRoute) when their CRDs are installed.
When such a CRD is deleted, Kopf's resource observer stops that watcher, but a watch-stream
that reconnects first gets "404 page not found", and Kopf 1.45 treats any error of a stream as
fatal: the whole operator exits (in a pod: a restart; in every case, every TrackingServer's
reconciles stop until then). Here a 404 ends that one stream instead; Kopf reconnects it after
a pause, and stops it for good once the kind has left discovery.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

log = logging.getLogger(__name__)

PAUSE_SECONDS = 5.0  # between reconnects of a stream whose kind is gone: not a request loop


def surviving(continuous_watch: Callable[..., AsyncIterator[Any]], not_found: type[BaseException],
              pause: float = PAUSE_SECONDS) -> Callable[..., AsyncIterator[Any]]:
    async def watch(**kwargs: Any) -> AsyncIterator[Any]:
        try:
            async for event in continuous_watch(**kwargs):
                yield event
        except not_found:
            log.info("%s is no longer served by the API server; its watch-stream pauses until the "
                     "kind returns or Kopf stops watching it", kwargs.get("resource"))
            await asyncio.sleep(pause)

    watch.__wrapped__ = continuous_watch  # type: ignore[attr-defined]
    return watch


def install() -> bool:
    """Wrap Kopf's continuous watch (the function its infinite watch calls by module name)."""
    try:
        from kopf._cogs.clients import errors, watching
    except ImportError:  # another Kopf layout: keep its behaviour rather than guess
        log.warning("Kopf's watching module moved; a removed CRD may stop the operator")
        return False
    if not hasattr(watching.continuous_watch, "__wrapped__"):
        watching.continuous_watch = surviving(watching.continuous_watch, errors.APINotFoundError)
    return True
