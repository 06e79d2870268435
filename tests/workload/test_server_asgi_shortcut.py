"""The image's API shortcut (mlflow_entrypoint.asgi) answers exactly as MLflow's own app does.

The same requests go through MLflow's FastAPI app and through the shortcut, in the server image's
environment, on one database: status, headers and body must be identical, for the requests the
shortcut takes (tracking API reads and writes, errors, a foreign Host header, CORS preflight,
a blocked and an allowed cross-origin request) and for those it must leave to MLflow (a workspace
header, an upload, native FastAPI routes under the same prefixes, /health). The shortcut must step
aside when MLflow's app is not the one it was written against.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.timeout(300)

SCRIPT = r"""
import asyncio, json, os, sys
from mlflow_entrypoint import asgi

CASES = json.loads(sys.argv[1])


async def call(app, case):
    body = json.dumps(case["json"]).encode() if "json" in case else b""
    named = {"host": "localhost:5000", **{k.lower(): v for k, v in case.get("headers", {}).items()}}
    headers = [(k.encode(), v.encode()) for k, v in named.items()]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    path, _, query = case["path"].partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": case["method"],
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": query.encode(), "headers": headers, "client": ("127.0.0.1", 40000),
             "server": ("127.0.0.1", 5000), "state": {}}
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(30)
        return {"type": "http.disconnect"}

    out = {"status": None, "headers": [], "body": b""}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = sorted([k.decode(), v.decode()] for k, v in message.get("headers", []))
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    eligible = isinstance(app, asgi.Shortcut) and app.eligible(dict(scope))
    await app(scope, receive, send)
    out["body"] = out["body"].decode("utf-8", "replace")
    return out, eligible


async def main():
    shortcut = asgi.create_app()
    result = {"active": isinstance(shortcut, asgi.Shortcut), "cases": []}
    mlflow_app = shortcut.app if result["active"] else shortcut
    taken = {"n": 0}
    direct = shortcut.direct

    async def counting(scope, receive, send):
        taken["n"] += 1
        await direct(scope, receive, send)

    shortcut.direct = counting
    from mlflow.server import handlers
    store = handlers._get_tracking_store()
    run_id = store.create_run("0", "test", 0, [], "shortcut").info.run_id

    def flat(routes):  # FastAPI includes routers lazily: walk down to the routes
        for r in routes:
            if hasattr(r, "effective_candidates"):
                yield from flat(r.effective_candidates())
            elif hasattr(r, "routes"):
                yield from flat(r.routes)
            elif getattr(r, "path", None) is not None:
                yield r

    native = sorted({r.path for r in flat(shortcut.native_routes)
                     if r.path.startswith(asgi.PREFIXES) and "{" not in r.path and "GET" in (r.methods or ())})
    result["native_paths"] = native
    cases = CASES + [{"name": "native route " + p, "method": "GET", "path": p, "expect_shortcut": False} for p in native[:3]]
    if native:  # a native path with a method it does not serve: FastAPI's 405, not Flask's 404
        cases.append({"name": "native route, wrong method", "method": "DELETE", "path": native[0], "expect_shortcut": False})
    for case in cases:
        case = json.loads(json.dumps(case).replace("RUN_ID", run_id))
        before = taken["n"]
        stock, _ = await call(mlflow_app, case)
        ours, eligible = await call(shortcut, case)
        result["cases"].append({"name": case["name"], "stock": stock, "ours": ours, "eligible": eligible,
                                "took_shortcut": taken["n"] > before, "expect_shortcut": case["expect_shortcut"]})

    # stepping aside: a middleware it does not know, and workspaces on
    from starlette.middleware.base import BaseHTTPMiddleware
    from mlflow.server.fastapi_app import create_fastapi_app

    other = create_fastapi_app()

    async def auth_middleware(request, call_next):
        return await call_next(request)

    other.add_middleware(BaseHTTPMiddleware, dispatch=auth_middleware)
    result["unknown_middleware"] = [asgi.wrap(other) is other, asgi.why_not(other)]
    os.environ["MLFLOW_ENABLE_WORKSPACES"] = "true"
    fresh = create_fastapi_app()
    result["workspaces"] = [asgi.wrap(fresh) is fresh, asgi.why_not(fresh)]
    print("RESULT " + json.dumps(result))


asyncio.run(main())
"""

ALLOWED_ORIGIN = "https://ui.example.com"
CASES = [
    {"name": "get experiment", "method": "GET", "path": "/api/2.0/mlflow/experiments/get?experiment_id=0", "expect_shortcut": True},
    {"name": "missing experiment (404)", "method": "GET", "path": "/api/2.0/mlflow/experiments/get?experiment_id=424242",
     "expect_shortcut": True},
    {"name": "search experiments", "method": "POST", "path": "/api/2.0/mlflow/experiments/search", "json": {"max_results": 5},
     "expect_shortcut": True},
    {"name": "log metric", "method": "POST", "path": "/api/2.0/mlflow/runs/log-metric",
     "json": {"run_id": "RUN_ID", "key": "loss", "value": 0.5, "timestamp": 1700000000000, "step": 1}, "expect_shortcut": True},
    {"name": "log metric without run_id (400)", "method": "POST", "path": "/api/2.0/mlflow/runs/log-metric", "json": {},
     "expect_shortcut": True},
    {"name": "ajax get run", "method": "GET", "path": "/ajax-api/2.0/mlflow/runs/get?run_id=RUN_ID", "expect_shortcut": True},
    {"name": "unknown endpoint", "method": "GET", "path": "/api/2.0/mlflow/no-such-endpoint", "expect_shortcut": True},
    {"name": "foreign Host header (403)", "method": "GET", "path": "/api/2.0/mlflow/experiments/get?experiment_id=0",
     "headers": {"Host": "evil.example"}, "expect_shortcut": True},
    {"name": "CORS preflight", "method": "OPTIONS", "path": "/api/2.0/mlflow/experiments/search",
     "headers": {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"}, "expect_shortcut": True},
    {"name": "cross-origin write blocked", "method": "POST", "path": "/api/2.0/mlflow/experiments/create",
     "json": {"name": "from-evil"}, "headers": {"Origin": "https://evil.example"}, "expect_shortcut": True},
    {"name": "allowed origin", "method": "POST", "path": "/api/2.0/mlflow/experiments/search", "json": {"max_results": 1},
     "headers": {"Origin": ALLOWED_ORIGIN}, "expect_shortcut": True},
    {"name": "workspace header (MLflow refuses)", "method": "GET", "path": "/api/2.0/mlflow/experiments/get?experiment_id=0",
     "headers": {"X-MLflow-Workspace": "team-a"}, "expect_shortcut": False},
    {"name": "upload through the server", "method": "POST", "path": "/ajax-api/2.0/mlflow/upload-artifact?run_uuid=RUN_ID&path=a.txt",
     "expect_shortcut": False},
    {"name": "artifact router", "method": "GET", "path": "/api/2.0/mlflow-artifacts/artifacts", "expect_shortcut": False},
    {"name": "health", "method": "GET", "path": "/health", "expect_shortcut": False},
]


@pytest.fixture(scope="module")
def compared(server_venv, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("shortcut")
    env = {
        "PATH": f"{server_venv.path / 'bin'}:/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8",
        # what `mlflow server` hands its workers (see mlflow/server/__init__.py)
        "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{work}/mlflow.db",
        "_MLFLOW_SERVER_ARTIFACT_ROOT": "mlflow-artifacts:/",
        "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
        "_MLFLOW_SERVER_ARTIFACTS_DESTINATION": str(work / "artifacts"),
        "MLFLOW_SERVER_ALLOWED_HOSTS": "localhost:5000,mlflow.team-a.svc:5000",
        "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS": ALLOWED_ORIGIN,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    res = subprocess.run([str(server_venv.python), "-c", SCRIPT, json.dumps(CASES)], env=env, cwd=work,
                         capture_output=True, text=True, timeout=240)
    lines = [line for line in res.stdout.splitlines() if line.startswith("RESULT ")]
    assert res.returncode == 0 and lines, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_the_shortcut_is_on_for_the_pinned_mlflow(compared):
    # fails when an MLflow upgrade changes the app's middleware or routes: review asgi.py then
    assert compared["active"]


@pytest.mark.parametrize("name", [c["name"] for c in CASES])
def test_same_answer_as_mlflow(compared, name):
    case = next(c for c in compared["cases"] if c["name"] == name)
    assert case["ours"] == case["stock"], f"{name}: shortcut answered differently from MLflow's app"
    assert case["took_shortcut"] == case["eligible"] == case["expect_shortcut"], case


def test_requests_meant_for_native_routes_go_to_mlflow(compared):
    native = [c for c in compared["cases"] if c["name"].startswith("native route ")]
    assert native, f"no native FastAPI route under the API prefixes to test with: {compared['native_paths']}"
    for case in native:
        assert not case["took_shortcut"], case["name"]
        assert case["ours"] == case["stock"], case["name"]


def test_the_shield_holds_on_the_shortcut(compared):
    """What the kept layers do is really done on the shortcut's path (not only equal to MLflow)."""
    by = {c["name"]: c["ours"] for c in compared["cases"]}
    assert by["foreign Host header (403)"]["status"] == 403
    assert by["cross-origin write blocked"]["status"] == 403
    preflight = dict(map(tuple, by["CORS preflight"]["headers"]))
    assert preflight.get("access-control-allow-origin") == ALLOWED_ORIGIN
    assert by["log metric"]["status"] == 200 and by["missing experiment (404)"]["status"] == 404
    assert "x-content-type-options" in dict(map(tuple, by["get experiment"]["headers"]))


def test_steps_aside_for_an_app_it_does_not_know(compared):
    assert compared["unknown_middleware"] == [True, "unknown middleware auth_middleware"]
    assert compared["workspaces"] == [True, "workspaces are enabled"]


@pytest.mark.parametrize("setting, on", [(None, True), ("false", False)])
def test_serve_loads_the_shortcut_unless_told_not_to(mlflow_server, migrated_pg_uri, tmp_path, setting, on):
    from .server_env import O, proxied

    env = proxied(migrated_pg_uri, str(tmp_path / "artifacts"))
    if setting is not None:
        env[O + "ASGI_SHORTCUT"] = setting
    srv = mlflow_server(env)
    r = requests.post(srv.url + "/api/2.0/mlflow/experiments/search", json={"max_results": 1}, timeout=30)
    assert r.status_code == 200, r.text
    # the entrypoint's process, exec'd into uvicorn's supervisor
    supervisor = Path(f"/proc/{srv.proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert ("mlflow_entrypoint.asgi:create_app" in supervisor) is on, supervisor
    assert ("mlflow.server.fastapi_app:app" in supervisor) is not on, supervisor
    assert ("tracking API shortcut on" in srv.output()) is on, srv.output()[-2000:]
