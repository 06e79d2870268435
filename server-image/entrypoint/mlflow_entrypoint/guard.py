"""ASGI layers the image puts around every app it serves (MLflow's, the basic-auth app, with or
without the API shortcut): the request body limit and the hidden ``/metrics`` route.

Body limit (``MLFLOW_OPERATOR_MAX_UPLOAD_SIZE``, the TrackingServer's ``spec.http.maxUploadSize``).
MLflow sets none, and an NGINX annotation covers only clients that come through an NGINX Ingress,
not an HTTPRoute, a LoadBalancer Service or a client in the cluster. So the server refuses a larger
body itself, with 413, before any of it is stored:

- a ``Content-Length`` above the limit is answered at once; the app is not called and not a byte
  of the body is read by it (uvicorn reads and drops the rest of the body, so a client that sends
  the whole body before reading the answer still gets the 413, not a reset connection);
- a body without ``Content-Length`` (chunked) is counted as the app reads it. The read that goes
  over the limit raises inside the app instead of returning data, so MLflow's handler fails before
  it publishes anything: its artifact stores write to a staging file or a temporary directory
  first and publish only a complete body (a disconnect would instead end the body early, and
  MLflow's WSGI bridge would then hand Flask a truncated one). Whatever the app answers to that
  failure is dropped and the client gets the 413.

Hidden ``/metrics``. With ``--expose-prometheus`` MLflow's Flask app serves ``/metrics`` on the API
port: behind basic-auth (so Prometheus gets 401) and, without auth, to anyone the Ingress lets in.
The image serves the same metrics on a port of their own (see ``launch``) and answers 404 for
``/metrics`` on the API port.
"""
from __future__ import annotations

import json
import re


class BodyTooLarge(Exception):
    """Raised into the app by the read that takes a body past the limit."""


def _content_length(headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:  # uvicorn's parser refuses these; stay out of its way if it did not
                return None
    return None


async def _answer(send, status: int, body: bytes, content_type: bytes) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuses request bodies larger than ``max_bytes`` with 413 (see the module's docstring)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes
        self._refusal = json.dumps({
            # MLflow's own error shape and code, so its client reports the message
            "error_code": "REQUEST_LIMIT_EXCEEDED",
            "message": f"The request body is larger than this server accepts ({max_bytes} bytes, "
                       "the TrackingServer's spec.http.maxUploadSize).",
        }).encode()

    async def refuse(self, send) -> None:
        await _answer(send, 413, self._refusal, b"application/json")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _content_length(scope.get("headers", ()))
        if declared is not None:
            # uvicorn's parser delivers exactly the declared length (a request with both
            # Content-Length and Transfer-Encoding is refused before it gets here)
            if declared > self.max_bytes:
                return await self.refuse(send)
            return await self.app(scope, receive, send)
        received = 0
        over = False
        started = False

        async def limited_receive():
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise BodyTooLarge(f"request body over {self.max_bytes} bytes")
            return message

        async def guarded_send(message):
            nonlocal started
            if over:  # the app's answer to its failed read
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:  # BodyTooLarge itself, or wrapped by the app (an ExceptionGroup, a 500)
            if not over:
                raise
        if over and not started:
            await self.refuse(send)


def _normalized(path: str) -> str:
    # what a router would still match: repeated and trailing slashes do not make another route
    return re.sub("/+", "/", path).rstrip("/") or "/"


class HiddenPaths:
    """Answers 404 for ``paths`` (compared after uvicorn's percent-decoding, slashes normalized)."""

    def __init__(self, app, paths, message: str):
        self.app = app
        self.paths = frozenset(paths)
        self.message = message.encode()

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "http" and any(p in path for p in self.paths) and _normalized(path) in self.paths:
            return await _answer(send, 404, self.message, b"text/plain; charset=utf-8")
        return await self.app(scope, receive, send)
