"""``/readyz``: the readiness probe of the server pods, answered by the worker itself.

MLflow's ``/health`` answers 200 whether or not the server can reach its database, so a pod whose
database went away stays Ready and the operator would learn nothing of it. ``/readyz`` runs
``SELECT 1`` on the tracking store's own engine (MLflow's connection pool: no new connection per
probe when one is idle, and always a complete handshake when there is none), bounded by a timeout,
and answers 503 when it fails; the reason, naming the database (never the password), goes to the
log, not to the answer: the path needs no credentials (the kubelet has none), so it tells a client
nothing about the database. Startup and liveness stay on ``/health``: a database outage makes pods
unready, it never restarts them.
"""
from __future__ import annotations

import asyncio
import logging
import os

from . import db
from .redact import redact

log = logging.getLogger("uvicorn.error")  # the logger uvicorn configures in its workers
READY_PATH = "/readyz"
NOT_READY = "not ready: the tracking database does not answer (the reason is in the server's log)\n"
QUERY_TIMEOUT_SECONDS = 4.0


def _ping_tracking_store() -> None:
    import sqlalchemy
    from mlflow.server.handlers import _get_tracking_store

    engine = getattr(_get_tracking_store(), "engine", None)
    if engine is None:
        return  # not a SQL store (the file store): nothing to ask
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT 1"))


class Readiness:
    """Answers GET/HEAD ``/readyz``; everything else goes to ``app``."""

    def __init__(self, app, backend_uri: str | None = None):
        self.app = app
        self.backend_uri = backend_uri if backend_uri is not None else os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
        self._failing = False

    async def _answer(self, send, status: int, text: str) -> None:
        body = text.encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != READY_PATH or scope["method"] not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        uri = self.backend_uri
        if not uri or uri.startswith("file:"):
            return await self._answer(send, 200, "ready\n")
        try:
            await asyncio.wait_for(asyncio.to_thread(_ping_tracking_store), QUERY_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            return await self._not_ready(send, f"did not answer within {QUERY_TIMEOUT_SECONDS:g} s")
        except Exception as e:  # any driver's error: the reason, redacted
            reason = str(getattr(e, "orig", None) or e).strip().splitlines()
            return await self._not_ready(send, reason[0] if reason else type(e).__name__)
        if self._failing:
            log.info("readiness: database %s answers again", db.describe(self.backend_uri))
            self._failing = False
        return await self._answer(send, 200, "ready\n")

    async def _not_ready(self, send, reason: str) -> None:
        if not self._failing:  # once per outage, not every probe
            log.warning(redact(f"readiness: database {db.describe(self.backend_uri)}: {reason}"))
            self._failing = True
        await self._answer(send, 503, NOT_READY)
