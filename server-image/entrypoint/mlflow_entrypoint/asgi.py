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

The shortcut is taken only when the app is exactly what it was reviewed against: the MLflow
version in ``REVIEWED_MLFLOW`` and, for each skipped layer (and the workspace resolution it calls),
the digest of its source in ``REVIEWED_SOURCES``. A function's name is not enough: a later MLflow
can keep the name and change what it does. Another version, a changed source, a middleware it does
not know (the basic-auth app), workspaces on or a static prefix make it step aside, with the reason
in the log. After an MLflow upgrade, review this module against the new code, then update the pins
(``python -m mlflow_entrypoint.asgi`` prints them). ``MLFLOW_OPERATOR_ASGI_SHORTCUT=false`` (the
TrackingServer's ``spec.http.apiShortcut: false``) turns it off.

``create_app`` is the factory uvicorn's workers load. It serves the app MLflow's ``server`` command
chose (its default app, or the basic-auth app), with the shortcut where it applies, inside the
image's body limit and hidden ``/metrics`` (``guard``).
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import textwrap

# uvicorn configures this logger in its workers (MLflow's log config); ours is the CLI's only
log = logging.getLogger("uvicorn.error")

MLFLOW_APP = "mlflow.server.fastapi_app:app"
FACTORY = "mlflow_entrypoint.asgi:create_app"
LAUNCHER = "mlflow_entrypoint.launch"
# set by serve for the workers: what create_app serves (see app_config)
CONFIG_ENV = "_MLFLOW_ENTRYPOINT_ASGI"
METRICS_PATH = "/metrics"

# MLflow's BaseHTTPMiddleware layers that are no-ops for the requests the shortcut takes (above).
SKIPPABLE = frozenset({"workspace_context_middleware", "gateway_timing_middleware", "artifact_transfer_middleware"})
# Pure ASGI layers the shortcut keeps, in MLflow's order.
KEPT = frozenset({"HostValidationMiddleware", "CORSMiddleware", "CORSBlockingMiddleware", "SecurityHeadersMiddleware"})
PREFIXES = ("/api/2.0/mlflow/", "/ajax-api/2.0/mlflow/", "/api/3.0/mlflow/", "/ajax-api/3.0/mlflow/")

# The code the shortcut was reviewed against (see the module's docstring).
REVIEWED_MLFLOW = "3.18.0"
REVIEWED_SOURCES = {
    "mlflow.server.fastapi_app:workspace_context_middleware": "8afce4c8cb9953d0a0fa13f917eac3857ed763468ecc9ef68ee7db3e48ed29c4",
    "mlflow.server.fastapi_app:gateway_timing_middleware": "f3e78f47a4dcc8bfad42b261411254cfcae3380b02ecdc0b0d84dda97fbca292",
    "mlflow.server.fastapi_app:artifact_transfer_middleware": "a9c65280542040ec4c0dd8908c672eda0686a6e36a6ac9715f187bcd6c948dd3",
    "mlflow.server.workspace_helpers:resolve_workspace_for_request_if_enabled": "6a120d154ab0367e2aab63e08988aa35c738e6108bf68456f0976a8a5daf6ed8",
}


def source_digest(fn) -> str:
    """sha256 of a function's source, as written (nested functions dedented)."""
    return hashlib.sha256(textwrap.dedent(inspect.getsource(fn)).encode()).hexdigest()


def qualified_name(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__name__', repr(fn))}"


def current_sources(app) -> dict[str, str]:
    """Digests of the functions REVIEWED_SOURCES pins, as this MLflow and ``app`` have them."""
    from mlflow.server import workspace_helpers

    fns = [m.kwargs.get("dispatch") for m in getattr(app, "user_middleware", None) or ()
           if m.kwargs.get("dispatch") is not None]
    fns.append(workspace_helpers.resolve_workspace_for_request_if_enabled)
    return {qualified_name(fn): source_digest(fn) for fn in fns}


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
        from mlflow.version import VERSION
    except ImportError as exc:
        return f"MLflow has moved ({exc})"
    if VERSION != REVIEWED_MLFLOW:
        return f"MLflow {VERSION} is not the reviewed {REVIEWED_MLFLOW}"
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
    try:
        sources = current_sources(app)
    except (ImportError, AttributeError, OSError, TypeError) as exc:  # no source to compare
        return f"cannot read the source of MLflow's middleware ({exc})"
    for name, digest in sources.items():
        reviewed = REVIEWED_SOURCES.get(name)
        if reviewed is None:
            return f"{name} is not the reviewed code (unknown function)"
        if digest != reviewed:
            return f"{name} is not the reviewed code (source digest {digest[:12]}, reviewed {reviewed[:12]})"
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


def app_config(*, max_body_bytes: int = 0, shortcut: bool = True, hide_metrics: bool = False,
               app: str = MLFLOW_APP, factory: bool = False, kubernetes_auth: dict | None = None,
               oidc_admin_group: str | None = None) -> dict:
    """What ``create_app`` serves in the workers (passed as JSON in CONFIG_ENV)."""
    return {"app": app, "factory": factory, "max_body_bytes": max_body_bytes, "shortcut": shortcut,
            "hide_metrics": hide_metrics, "kubernetes_auth": kubernetes_auth,
            "oidc_admin_group": oidc_admin_group}


def create_app():
    """uvicorn's factory (``--factory mlflow_entrypoint.asgi:create_app``) in each worker."""
    from uvicorn.importer import import_from_string

    config = {**app_config(), **json.loads(os.environ.get(CONFIG_ENV) or "{}")}
    app = import_from_string(config["app"])
    if config["factory"]:
        app = app()
    if config["app"] == MLFLOW_APP:
        if config["shortcut"]:
            app = wrap(app)
        else:
            log.info("tracking API shortcut off (MLFLOW_OPERATOR_ASGI_SHORTCUT=false)")
    if config["hide_metrics"]:
        from .guard import HiddenPaths

        app = HiddenPaths(app, {METRICS_PATH}, "/metrics is served on the metrics port, not on this one\n")
    if config["max_body_bytes"]:
        from .guard import BodyLimit

        app = BodyLimit(app, int(config["max_body_bytes"]))
    if config.get("kubernetes_auth"):
        from . import kubeauth

        app = kubeauth.wrap(app, config["kubernetes_auth"])  # before everything but the readiness probe
    if config.get("oidc_admin_group"):
        from .oidcgate import AdminGroupGate

        app = AdminGroupGate(app, config["oidc_admin_group"])
    from .ready import Readiness  # outermost: the kubelet's probe carries no token and meets no limit

    return Readiness(app)


def uvicorn_command(cmd: list[str], config: dict) -> tuple[list[str], dict[str, str]]:
    """MLflow's uvicorn command (``python -m uvicorn [opts] [--factory] APP``), run by the launcher
    with ``create_app`` around APP, and the environment that tells ``create_app`` about it. Any
    other command is left alone."""
    if len(cmd) < 4 or cmd[1:3] != ["-m", "uvicorn"] or cmd[-1].startswith("-"):
        return cmd, {}
    factory = "--factory" in cmd[3:-1]
    opts = [arg for arg in cmd[3:-1] if arg != "--factory"]
    config = {**config, "app": cmd[-1], "factory": factory}
    return [cmd[0], "-m", LAUNCHER, *opts, "--factory", FACTORY], {CONFIG_ENV: json.dumps(config)}


def reviewed_pins() -> dict:
    """The pins for the installed MLflow (``python -m mlflow_entrypoint.asgi``), to paste into this
    module once its shortcut has been reviewed against that MLflow."""
    from mlflow.server.fastapi_app import create_fastapi_app
    from mlflow.version import VERSION

    return {"REVIEWED_MLFLOW": VERSION, "REVIEWED_SOURCES": current_sources(create_fastapi_app())}


if __name__ == "__main__":
    print(json.dumps(reviewed_pins(), indent=4))
