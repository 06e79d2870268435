"""``serve``: check, then exec ``mlflow server`` with the flags of the configured scenario.

Choices (each measured by bench/server.py, see the report in the repository's history):
- ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` unless the environment sets it: the job runner and
  its huey consumers are ~10 extra processes that a tracking server for teams does not use, and
  the image leaves huey out.
- uvicorn runs with ``--loop uvloop --http httptools``. With more than one worker, uvicorn binds the
  listening socket itself with ``proto=0``; asyncio then never sets TCP_NODELAY on accepted
  connections (it checks ``proto == IPPROTO_TCP``), so every keep-alive request after the first
  waits ~40 ms for the client's delayed ACK (uvicorn issue 3149). uvloop's TCP transport sets
  TCP_NODELAY on every accepted TCP connection whatever ``proto`` says, and httptools is the faster
  parser on top. No patching of uvicorn, one documented option.
- the backend URI reaches MLflow through ``MLFLOW_BACKEND_STORE_URI`` (never argv, which anyone
  on the node can read in /proc), rewritten for the image's drivers with a connect timeout.
- the working directory is the scratch dir: nothing MLflow writes by default (``./mlflow.db``,
  ``./mlartifacts``) can land in a read-only or shared place.
- ``mlflow server`` is run in this process, and where it would start uvicorn as a child and wait
  for it, the process becomes uvicorn instead (see ``run_mlflow_server``): the CLI parent holds
  ~160 MB of imported MLflow for nothing but forwarding signals, and uvicorn's supervisor as the
  container's main process gets SIGTERM directly.
- uvicorn loads ``mlflow_entrypoint.asgi``: the app MLflow chose (its own, or basic-auth's) inside
  the request body limit and with ``/metrics`` hidden on the API port (``guard``); MLflow's own app
  with a Flask-served tracking API that skips three middleware layers doing nothing for it.
- uvicorn's command runs through ``mlflow_entrypoint.launch``, which serves the Prometheus metrics on
  a port of their own (no basic-auth there, never routed by the Ingress).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

from . import asgi, db, launch
from .config import PREFIX, SECRET_KEY_VAR, Settings, host_header_forms

log = logging.getLogger("mlflow_entrypoint")

# MLflow's `server` command reads these from the environment when a flag is absent. Kubernetes
# service links (a Service named `mlflow` gives MLFLOW_PORT=tcp://...) or a stray value must not
# change what the entrypoint decided, so they are removed and the entrypoint's flags are explicit.
_CONTROLLED_ENV = (
    "MLFLOW_HOST", "MLFLOW_PORT", "MLFLOW_WORKERS", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_REGISTRY_STORE_URI",
    "MLFLOW_DEFAULT_ARTIFACT_ROOT", "MLFLOW_SERVE_ARTIFACTS", "MLFLOW_ARTIFACTS_ONLY",
    "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_GUNICORN_OPTS", "MLFLOW_UVICORN_OPTS", "MLFLOW_EXPOSE_PROMETHEUS",
    "MLFLOW_SERVER_ALLOWED_HOSTS", "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", "MLFLOW_AUTH_CONFIG_PATH",
    "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "prometheus_multiproc_dir",
    "PROMETHEUS_MULTIPROC_DIR", SECRET_KEY_VAR,
)


# uvicorn's supervisor kills a worker that does not answer its health-check ping within
# --timeout-worker-healthcheck (default 5 s), and a worker importing MLflow on a busy or CPU-limited
# node easily takes longer: the stock server then restarts its workers in a loop (seen at a load
# average of 20 on 2 cores). A hung worker is still replaced, after this many seconds.
WORKER_HEALTHCHECK_SECONDS = 60


def uvicorn_opts(s: Settings) -> str:
    opts = ["--loop", "uvloop", "--http", "httptools", "--timeout-worker-healthcheck", str(WORKER_HEALTHCHECK_SECONDS)]
    if s.keep_alive_timeout:
        opts += ["--timeout-keep-alive", str(s.keep_alive_timeout)]
    return " ".join(opts)


def _ini_value(value: str) -> str:
    # MLflow reads the file with configparser's default interpolation: a literal % must be doubled
    # (URL-encoded passwords contain %).
    return value.replace("%", "%%")


def write_auth_config(s: Settings) -> Path:
    """The basic-auth config file, in the scratch dir (the image's own file is read-only).

    The admin credentials stay out of the file (MLflow reads them from MLFLOW_AUTH_ADMIN_*); the auth
    database URI must be in it (MLflow has no environment variable for it), so the file is 0600.
    """
    path = s.scratch_dir / "basic_auth.ini"
    lines = [
        "[mlflow]",
        "default_permission = READ",
        f"database_uri = {_ini_value(db.normalize_uri(s.auth_database_uri))}",
        f"admin_username = {_ini_value(s.admin_username)}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        # Without the cache MLflow verifies the PBKDF2 password hash on every request (~200 ms of
        # CPU each); a password change reaches the other workers within this many seconds.
        f"auth_cache_ttl_seconds = {s.auth_cache_ttl_seconds}",
        "auth_cache_max_size = 10000",
    ]
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def allowed_hosts_of(s: Settings) -> str | None:
    """MLFLOW_OPERATOR_ALLOWED_HOSTS plus the pod's own addresses. The operator cannot write those
    itself: the kubelet's $(POD_IP) gives a bare IPv6 address, and `fd00::1:5000` is not a Host."""
    if not s.pod_ips:
        return s.allowed_hosts
    listed = [h for h in (s.allowed_hosts or "").split(",") if h]
    return ",".join(dict.fromkeys(listed + [f for ip in s.pod_ips for f in host_header_forms(ip, s.port)]))


def build(s: Settings, environ: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` argv and environment for the settings (no side effects)."""
    environ = dict(os.environ if environ is None else environ)
    env = {
        k: v
        for k, v in environ.items()
        if not k.startswith(PREFIX) and k not in _CONTROLLED_ENV
        and not (k.endswith("_FILE") and k[: -len("_FILE")] == SECRET_KEY_VAR)
    }
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # The gateway's supported-models call fetches a model catalog from the internet by default and
    # hangs where there is none (most clusters): "" turns the remote fetch off; a mirror can be set.
    env.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    home = env.get("HOME")
    if not home or not os.access(home, os.W_OK):
        env["HOME"] = str(s.scratch_dir)

    argv = [
        "mlflow", "server",
        "--host", s.host,
        "--port", str(s.port),
        "--workers", str(s.workers),
        "--uvicorn-opts", uvicorn_opts(s),
    ]
    if s.role == "artifacts":
        argv += ["--artifacts-only", "--serve-artifacts", "--artifacts-destination", s.artifacts_destination]
    else:
        env["MLFLOW_BACKEND_STORE_URI"] = db.normalize_uri(s.backend_store_uri)
        if s.registry_store_uri:
            env["MLFLOW_REGISTRY_STORE_URI"] = db.normalize_uri(s.registry_store_uri)
        if s.serve_artifacts:
            argv += ["--serve-artifacts", "--artifacts-destination", s.artifacts_destination]
            if s.default_artifact_root:
                argv += ["--default-artifact-root", s.default_artifact_root]
        else:
            argv += ["--no-serve-artifacts", "--default-artifact-root", s.default_artifact_root]
    allowed_hosts = allowed_hosts_of(s)
    if allowed_hosts:
        argv += ["--allowed-hosts", allowed_hosts]
    if s.cors_allowed_origins:
        argv += ["--cors-allowed-origins", s.cors_allowed_origins]
    if s.expose_prometheus:
        argv += ["--expose-prometheus", str(s.scratch_dir / "metrics")]
    if s.secret_key:
        env[SECRET_KEY_VAR] = s.secret_key
    if s.auth == "basic":
        argv += ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(s.scratch_dir / "basic_auth.ini")
        env["MLFLOW_AUTH_ADMIN_USERNAME"] = s.admin_username
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = s.admin_password
    return argv, env


def check_databases(s: Settings) -> None:
    """Wait (bounded) for every database, then refuse unless each is at the image's schema head.

    MLflow itself would create the schema on an empty database and the auth app would upgrade its
    own; the operator's migration Job is the only place a schema changes, so serve never lets that
    happen: it refuses an empty, older, newer or unversioned schema with the reason.
    """
    problems = []
    for kind, uri in s.database_uris:
        db.wait_for(uri, s.backend_wait_seconds)
        status = db.status_of(uri, kind)
        if not status.ok:
            problems.append(status.explain(db.describe(uri)))
    if problems:
        raise db.BackendError("refusing to start: " + "; ".join(problems))


def prepare_scratch(s: Settings) -> None:
    s.scratch_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(s.scratch_dir, os.W_OK):
        raise db.BackendError(f"scratch directory {s.scratch_dir} is not writable")
    if s.expose_prometheus:
        # prometheus_client's multiprocess files of a previous run (same emptyDir after a container
        # restart) would be summed into the new counters.
        shutil.rmtree(s.scratch_dir / "metrics", ignore_errors=True)
        (s.scratch_dir / "metrics").mkdir()
    if s.auth == "basic":
        write_auth_config(s)


def serve(s: Settings) -> None:
    check_databases(s)
    prepare_scratch(s)
    argv, env = build(s)
    exe = Path(sys.executable).with_name("mlflow")
    if not exe.exists():
        exe = Path(shutil.which("mlflow") or "mlflow")
    log.info(
        "starting: role=%s workers=%d artifacts=%s auth=%s on %s:%d",
        s.role, s.workers,
        ("proxied to " + s.artifacts_destination) if s.serve_artifacts else ("direct to " + str(s.default_artifact_root)),
        s.auth, s.host, s.port,
    )
    if s.host in ("0.0.0.0", "::") and not allowed_hosts_of(s):
        log.warning(
            "MLFLOW_OPERATOR_ALLOWED_HOSTS is empty: MLflow then answers 403 'Invalid Host header' to "
            "every request whose Host is not localhost, while /health keeps answering 200"
        )
    os.chdir(s.scratch_dir)
    keep_parent = env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "").lower() not in ("false", "0")
    run_mlflow_server(argv, env, server_env(s), keep_parent=keep_parent)
    if s.auth == "kubernetes" or s.oidc_admin_group:
        raise SystemExit("refusing to start: MLflow cannot be run in-process, and the plain CLI would serve "
                         "without the " + ("Kubernetes token check" if s.auth == "kubernetes" else "admin group's check"))
    log.warning("starting the plain mlflow CLI: no body limit, /metrics on the API port")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(str(exe), [str(exe), *argv[1:]], env)


def server_env(s: Settings) -> dict[str, str]:
    """What the launcher and the workers' ``create_app`` are told (see asgi.uvicorn_command)."""
    kubernetes_auth = None
    if s.auth == "kubernetes":
        kubernetes_auth = {"audience": s.kubernetes_audience, "namespace": s.kubernetes_namespace,
                           "name": s.kubernetes_name}
    config = asgi.app_config(max_body_bytes=s.max_upload_bytes, shortcut=s.asgi_shortcut,
                             hide_metrics=s.expose_prometheus, kubernetes_auth=kubernetes_auth,
                             oidc_admin_group=s.oidc_admin_group if s.auth == "oidc" else None)
    env = {asgi.CONFIG_ENV: json.dumps(config)}
    if s.expose_prometheus:
        env[launch.METRICS_ENV] = json.dumps(
            {"host": s.metrics_host or s.host, "port": s.metrics_port, "directory": str(s.scratch_dir / "metrics")}
        )
    return env


def run_mlflow_server(argv: list[str], env: dict[str, str], extra: dict[str, str], keep_parent: bool = False) -> None:
    """Runs MLflow's own ``server`` command here, up to the point where it starts uvicorn, and
    execs uvicorn in its place, through the launcher and with the image's app (``extra`` tells
    them the settings).

    Everything MLflow prepares for its workers stays MLflow's (argument checks, the store
    initialisation, basic-auth bootstrap, the per-boot ids and tokens in the workers'
    environment): only the spawn is replaced. With the job runner on (``keep_parent``), MLflow
    must keep its parent process (it starts the runner after uvicorn): uvicorn is then started
    as MLflow's child, still through the launcher. Should a later MLflow start uvicorn some other
    way, its CLI simply runs as the parent, as it does by default.
    Returns only when MLflow cannot be imported here; the caller then execs the plain CLI.
    """
    os.environ.clear()
    os.environ.update(env)  # before the import: MLflow reads some settings when its modules load
    try:
        import mlflow.server
        from mlflow.cli import cli
    except ImportError as exc:  # a broken environment: let the plain CLI report it
        log.warning("cannot run mlflow server in-process (%s); starting it as a child", exc)
        return

    spawn = mlflow.server._exec_cmd
    config = json.loads(extra[asgi.CONFIG_ENV])

    def exec_instead(cmd, *, extra_env=None, **kwargs):
        cmd, app_env = asgi.uvicorn_command(list(cmd), config)
        if not app_env and config.get("kubernetes_auth"):
            # Without the image's app there is no token check: never serve unchecked.
            raise SystemExit(f"refusing to start: MLflow starts its server as {cmd[:3]}, which the image cannot "
                             "wrap with its Kubernetes token check")
        if app_env:
            extra_env = {**(extra_env or {}), **extra, **app_env}
        if keep_parent or not app_env:
            return spawn(cmd, extra_env=extra_env, **kwargs)
        child_env = {**os.environ, **(extra_env or {})}
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(cmd[0], list(cmd), child_env)

    mlflow.server._exec_cmd = exec_instead
    cli.main(args=argv[1:], prog_name="mlflow")
