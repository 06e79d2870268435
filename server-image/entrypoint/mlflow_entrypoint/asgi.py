"""The ASGI app the server's uvicorn workers load: MLflow's own FastAPI app, with a shortcut for
the tracking REST API.

MLflow serves its REST API from a Flask app mounted under a FastAPI app. Before a request reaches
Flask it passes three ``BaseHTTPMiddleware`` layers (each runs the rest of the stack in a new task
with memory streams between them) and a scan of ~25 native FastAPI routes; for ``log-metric`` that
is a third of the server's CPU per request (`make bench-server`, configuration "API shortcut off":
4.5 against 3.0 ms per log_metric, p50 with 8 client threads 27 against 19 ms). For the
Flask-served tracking API those three layers do nothing:

- ``workspace_context_middleware`` sets "no workspace" when workspaces are off, and refuses a
  request carrying a workspace header;
- ``gateway_timing_middleware`` acts only under ``/gateway/``;
- ``artifact_transfer_middleware`` acts only on ``POST .../upload-artifact``.

So a request under ``/api/{2,3}.0/mlflow/`` or ``/ajax-api/{2,3}.0/mlflow/`` that no native route
claims, that is not an upload and that carries no workspace header, goes straight to the Flask
mount through every other layer of MLflow's stack (host validation, CORS, security headers, error
and exception handling, body limit), built by FastAPI itself. Every other request takes MLflow's
full app, unchanged.

The shortcut is taken only when the app is exactly what it was written against: a middleware it
does not know (a later MLflow, the basic-auth app), workspaces on or a static prefix make it step
aside, with the reason in the log. ``MLFLOW_OPERATOR_ASGI_SHORTCUT=false`` makes ``serve`` load
MLflow's app itself.
"""
from __future__ import annotations

import functools
import logging
import os

# uvicorn configures this logger in its workers (MLflow's log config); ours is the CLI's only
log = logging.getLogger("uvicorn.error")

MLFLOW_APP = "mlflow.server.fastapi_app:app"
FACTORY = "mlflow_entrypoint.asgi:create_app"

# MLflow's BaseHTTPMiddleware layers that are no-ops for the requests the shortcut takes (above).
SKIPPABLE = frozenset({"workspace_context_middleware", "gateway_timing_middleware", "artifact_transfer_middleware"})
# Pure ASGI layers the shortcut keeps, in MLflow's order.
KEPT = frozenset({"HostValidationMiddleware", "CORSMiddleware", "CORSBlockingMiddleware", "SecurityHeadersMiddleware"})
PREFIXES = ("/api/2.0/mlflow/", "/ajax-api/2.0/mlflow/", "/api/3.0/mlflow/", "/ajax-api/3.0/mlflow/")


class Shortcut:
    """Sends eligible requests to ``direct`` (MLflow's stack without the no-op layers and the route
    scan), everything else to ``app`` (MLflow's app)."""

    def __init__(self, app, direct, native_routes, workspace_header: str, *, cache_size: int = 4096):
        self.app = app
        self.direct = direct
        self.native_routes = native_routes
        self.workspace_header = workspace_header.lower().encode("latin-1")  # ASGI header names: lower case
        # user-controlled paths: the cache is bounded
        self._eligible_path = functools.lru_cache(maxsize=cache_size)(self._eligible_path_uncached)

    def _eligible_path_uncached(self, method: str, path: str) -> bool:
        if not path.startswith(PREFIXES) or path.rstrip("/").endswith("/upload-artifact"):
            return False
        from starlette.routing import Match

        probe = {"type": "http", "path": path, "root_path": "", "method": method}
        return all(route.matches(probe)[0] is Match.NONE for route in self.native_routes)

    def eligible(self, scope) -> bool:
        if scope["type"] != "http" or scope.get("root_path"):
            return False
        if any(name == self.workspace_header for name, _ in scope.get("headers", ())):
            return False
        return self._eligible_path(scope["method"], scope["path"])

    async def __call__(self, scope, receive, send):
        if self.eligible(scope):
            scope["app"] = self.app
            await self.direct(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def why_not(app) -> str | None:
    """Why the shortcut cannot stand in for part of ``app``; None when it can."""
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.routing import Mount

    try:
        from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
        from mlflow.server.handlers import STATIC_PREFIX_ENV_VAR
        from mlflow.utils.workspace_utils import WORKSPACE_HEADER_NAME  # noqa: F401 (wrap needs it)
    except ImportError as exc:
        return f"MLflow has moved ({exc})"
    if MLFLOW_ENABLE_WORKSPACES.get():
        return "workspaces are enabled"
    if os.environ.get(STATIC_PREFIX_ENV_VAR, "").strip("/"):
        return "a static prefix is set"
    for m in getattr(app, "user_middleware", None) or ():
        if m.cls is BaseHTTPMiddleware:
            name = getattr(m.kwargs.get("dispatch"), "__name__", repr(m.kwargs.get("dispatch")))
            if name not in SKIPPABLE:
                return f"unknown middleware {name}"
        elif m.cls.__name__ not in KEPT:
            return f"unknown middleware {m.cls.__name__}"
    routes = getattr(getattr(app, "router", None), "routes", None) or []
    if not routes or not isinstance(routes[-1], Mount) or routes[-1].path != "":
        return "the Flask app is not the last, catch-all mount"
    if any(isinstance(r, Mount) and r.path == "" for r in routes[:-1]):
        return "more than one catch-all mount"
    if not hasattr(app, "build_middleware_stack"):
        return "the app cannot build its middleware stack"
    return None


def _mount_app(mount):
    """The catch-all mount as its router would call it (same child scope)."""
    from starlette.routing import Match

    async def handle(scope, receive, send):
        match, child_scope = mount.matches(scope)
        if match is not Match.FULL:  # cannot happen for a catch-all mount; stay exact if it does
            raise RuntimeError(f"catch-all mount did not match {scope['path']!r}")
        scope.update(child_scope)
        await mount.handle(scope, receive, send)

    return handle


def direct_stack(app):
    """MLflow's middleware stack as FastAPI builds it, without the skippable layers, around the
    Flask mount instead of the router. ``app`` is left as it was."""
    from starlette.middleware.base import BaseHTTPMiddleware

    saved = app.user_middleware, app.router
    try:
        app.user_middleware = [m for m in saved[0] if m.cls is not BaseHTTPMiddleware]
        app.router = _mount_app(saved[1].routes[-1])
        return app.build_middleware_stack()
    finally:
        app.user_middleware, app.router = saved


def wrap(app):
    """``app`` with the shortcut, or ``app`` itself when the shortcut cannot stand in for it."""
    reason = why_not(app)
    if reason:
        log.info("serving MLflow's app without the tracking API shortcut: %s", reason)
        return app
    log.info("tracking API shortcut on: skipping MLflow's %s for the Flask-served API", ", ".join(sorted(SKIPPABLE)))
    from mlflow.utils.workspace_utils import WORKSPACE_HEADER_NAME

    return Shortcut(app, direct_stack(app), app.router.routes[:-1], WORKSPACE_HEADER_NAME)


def create_app():
    """uvicorn's factory (``--factory mlflow_entrypoint.asgi:create_app``) in each worker."""
    from mlflow.server.fastapi_app import app as mlflow_app

    return wrap(mlflow_app)


def uvicorn_command(cmd: list[str]) -> list[str]:
    """MLflow's uvicorn command with this app in place of MLflow's default one; any other app
    (basic-auth's, a plugin's) is left alone."""
    if not cmd or cmd[-1] != MLFLOW_APP or "--factory" in cmd:
        return cmd
    return [*cmd[:-1], "--factory", FACTORY]
