"""The env contract between the operator's pod spec and the server image.

Every ``MLFLOW_OPERATOR_*`` value (and ``MLFLOW_FLASK_SERVER_SECRET_KEY``) may be given directly or
as a file path in ``<NAME>_FILE`` (a Secret mounted as a file); giving both is an error.

| env var | meaning |
|---|---|
| MLFLOW_OPERATOR_ROLE | ``tracking`` (default) or ``artifacts`` (``--artifacts-only``) |
| MLFLOW_OPERATOR_BACKEND_STORE_URI | tracking DB URI: sqlite:////abs/path.db, postgresql://..., mysql://..., or file:///abs/dir (file store) |
| MLFLOW_OPERATOR_REGISTRY_STORE_URI | optional separate model-registry DB URI |
| MLFLOW_OPERATOR_SERVE_ARTIFACTS | ``true``/``false``: proxy artifacts or let clients write directly |
| MLFLOW_OPERATOR_ARTIFACTS_DESTINATION | where proxied artifacts go (s3://, gs://, wasbs://, /data/..., http://...) |
| MLFLOW_OPERATOR_DEFAULT_ARTIFACT_ROOT | direct mode: the URI clients write to themselves |
| MLFLOW_OPERATOR_HOST / MLFLOW_OPERATOR_PORT | listen address (default 0.0.0.0 / 5000) |
| MLFLOW_OPERATOR_WORKERS | uvicorn workers (default 2) |
| MLFLOW_OPERATOR_ALLOWED_HOSTS | comma list for ``--allowed-hosts`` |
| MLFLOW_OPERATOR_POD_IPS | the pod's IPs (``status.podIPs``, comma list): each is allowed as a Host, IPv6 in brackets, with and without the port |
| MLFLOW_OPERATOR_CORS_ALLOWED_ORIGINS | comma list for ``--cors-allowed-origins`` |
| MLFLOW_OPERATOR_AUTH | ``none`` (default) or ``basic`` |
| MLFLOW_OPERATOR_AUTH_DATABASE_URI | basic-auth DB URI |
| MLFLOW_OPERATOR_ADMIN_USERNAME / _PASSWORD | basic-auth admin (password: 12+ characters) |
| MLFLOW_OPERATOR_AUTH_CACHE_TTL_SECONDS | basic-auth credential cache (default 60; 0 disables) |
| MLFLOW_FLASK_SERVER_SECRET_KEY | shared by all replicas; required with basic-auth |
| MLFLOW_OPERATOR_EXPOSE_PROMETHEUS | ``true``: serve Prometheus metrics on the metrics port (never on the API port) |
| MLFLOW_OPERATOR_METRICS_PORT | the metrics port (default 9090) |
| MLFLOW_OPERATOR_METRICS_HOST | the metrics listener's address (default: MLFLOW_OPERATOR_HOST; 0.0.0.0 when the API listens on loopback behind the OIDC sidecar) |
| MLFLOW_OPERATOR_OIDC_ADMIN_GROUP | AUTH=oidc: only this group (X-Forwarded-Groups from the sidecar) may delete |
| MLFLOW_OPERATOR_MAX_UPLOAD_SIZE | largest request body, bytes or a binary quantity (512Mi, 5Gi); 413 above it; 0 or unset = unlimited |
| MLFLOW_OPERATOR_SCRATCH_DIR | writable dir (default /tmp): cwd, generated config, metrics |
| MLFLOW_OPERATOR_KEEP_ALIVE_TIMEOUT | uvicorn keep-alive seconds |
| MLFLOW_OPERATOR_ASGI_SHORTCUT | ``false``: no tracking API shortcut, MLflow's app as ``mlflow server`` builds it (see asgi.py) |
| MLFLOW_OPERATOR_BACKEND_WAIT_SECONDS | bound for waiting on the DB (default 60) |
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .redact import redact, register_secret, register_uri

PREFIX = "MLFLOW_OPERATOR_"
SECRET_KEY_VAR = "MLFLOW_FLASK_SERVER_SECRET_KEY"
MIN_ADMIN_PASSWORD = 12  # MLflow's own password policy for the basic-auth admin
DB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
FILE_STORE = "file"  # scenario 1: MLflow's file store on a volume (no database, no migrations)
# No abfss://: MLflow's Data Lake repository needs azure-storage-file-datalake, which this image
# does not ship (wasbs:// reaches the same ADLS Gen2 accounts through their Blob endpoint).
ARTIFACT_SCHEMES = ("s3", "gs", "wasbs", "http", "https", "file", "mlflow-artifacts")


class ConfigError(Exception):
    """The configuration is invalid or contradictory; the message lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = [redact(p) for p in problems]
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


def read_env(name: str, environ: dict[str, str] | None = None) -> str | None:
    """The value of ``name``, or the content of the file named by ``<name>_FILE``; None if unset."""
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    path = environ.get(name + "_FILE")
    if value is not None and path is not None:
        raise ConfigError([f"{name} and {name}_FILE are both set: set only one"])
    if path is not None:
        try:
            value = Path(path).read_text().rstrip("\r\n")
        except OSError as e:
            raise ConfigError([f"{name}_FILE: cannot read {path}: {e.strerror}"]) from None
    if value is not None and value.strip() == "":
        return None
    return value


@dataclass
class Settings:
    role: str = "tracking"
    backend_store_uri: str | None = None
    registry_store_uri: str | None = None
    serve_artifacts: bool = True
    artifacts_destination: str | None = None
    default_artifact_root: str | None = None
    host: str = "0.0.0.0"
    port: int = 5000
    workers: int = 2
    allowed_hosts: str | None = None
    pod_ips: list[str] = field(default_factory=list)
    cors_allowed_origins: str | None = None
    auth: str = "none"
    auth_database_uri: str | None = None
    admin_username: str | None = None
    admin_password: str | None = None
    auth_cache_ttl_seconds: int = 60
    kubernetes_audience: str | None = None
    kubernetes_namespace: str | None = None
    kubernetes_name: str | None = None
    oidc_admin_group: str | None = None
    metrics_host: str | None = None
    # `migrate` / `wait-for-backend` (loaded with for_serving=False) take the auth database whenever its URI
    # is given: the operator's migration Job and `migrate` init container pass the databases only, not AUTH.
    database_job: bool = False
    secret_key: str | None = None
    expose_prometheus: bool = False
    metrics_port: int = 9090
    max_upload_bytes: int = 0  # 0: unlimited
    scratch_dir: Path = field(default_factory=lambda: Path("/tmp"))
    keep_alive_timeout: int | None = None
    asgi_shortcut: bool = True
    backend_wait_seconds: float = 60.0

    @property
    def database_uris(self) -> list[tuple[str, str]]:
        """(kind, uri) of every database this server uses: tracking, registry, auth (file stores excluded)."""
        out: list[tuple[str, str]] = []
        if self.backend_store_uri and not is_file_store(self.backend_store_uri):
            out.append(("tracking", self.backend_store_uri))
        if (self.registry_store_uri and self.registry_store_uri != self.backend_store_uri
                and not is_file_store(self.registry_store_uri)):
            out.append(("registry", self.registry_store_uri))
        if self.auth_database_uri and (self.auth == "basic" or self.database_job):
            out.append(("auth", self.auth_database_uri))
        return out


def _bool(name: str, raw: str | None, default: bool, problems: list[str]) -> bool:
    if raw is None:
        return default
    v = raw.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    problems.append(f"{name}={raw!r}: expected true or false")
    return default


def _int(name: str, raw: str | None, default, problems: list[str], minimum: int, maximum: int | None = None):
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        problems.append(f"{name}={raw!r}: expected an integer")
        return default
    if v < minimum or (maximum is not None and v > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        problems.append(f"{name}={v}: must be {bound}")
    return v


_BINARY_SUFFIXES = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


def _byte_size(name: str, raw: str | None, problems: list[str]) -> int:
    """Bytes, or a binary quantity (what the TrackingServer's maxUploadSize allows)."""
    if raw is None:
        return 0
    value = raw.strip()
    number, suffix = value, ""
    if value[-2:] in _BINARY_SUFFIXES:
        number, suffix = value[:-2], value[-2:]
    if not number.isdigit():
        problems.append(f"{name}={raw!r}: expected a number of bytes, optionally with Ki, Mi, Gi or Ti")
        return 0
    return int(number) * _BINARY_SUFFIXES[suffix]


def is_file_store(uri: str | None) -> bool:
    return bool(uri) and uri.startswith(FILE_STORE + ":")


def _check_db_uri(name: str, uri: str, problems: list[str], file_ok: bool = False) -> None:
    if file_ok and is_file_store(uri):
        if not uri.startswith("file:///"):
            problems.append(f"{name}: the file store needs an absolute path on a volume, e.g. file:///data/mlruns")
        return
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    dialect, _, driver = scheme.partition("+")
    if dialect not in DB_SCHEMES:
        problems.append(
            f"{name}: unsupported backend URI scheme {scheme or uri!r}; "
            "use sqlite:////absolute/path.db, postgresql://..., mysql://..."
            + (" or file:///absolute/dir" if file_ok else "")
        )
        return
    if dialect in ("postgresql", "postgres") and driver not in ("", "psycopg2"):
        problems.append(f"{name}: driver {driver!r} is not in the image; use postgresql:// (psycopg2)")
    if dialect == "mysql" and driver not in ("", "pymysql"):
        problems.append(f"{name}: driver {driver!r} is not in the image; use mysql:// (PyMySQL)")
    if dialect == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if not path.startswith("/"):
            problems.append(
                f"{name}: SQLite needs an absolute path on a volume, e.g. sqlite:////data/mlflow.db "
                "(a relative path would land in the container's working directory and be lost)"
            )
    elif not urlsplit(uri).hostname:
        problems.append(f"{name}: no host in the database URI")


def _check_artifact_uri(name: str, uri: str, problems: list[str]) -> None:
    if uri.startswith("/"):
        return
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    if scheme not in ARTIFACT_SCHEMES:
        problems.append(
            f"{name}: unsupported artifact URI {uri!r}; use s3://, gs://, wasbs://, http(s):// "
            "or an absolute path"
        )


def _addresses(name: str, raw: str | None, problems: list[str]) -> list[str]:
    out = []
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        try:
            out.append(str(ipaddress.ip_address(item.strip())))
        except ValueError:
            problems.append(f"{name}: {item.strip()!r} is not an IP address")
    return out


def host_header_forms(address: str, port: int) -> list[str]:
    """How a client writes an address in a Host header (RFC 3986: an IPv6 literal in brackets)."""
    host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    return [host, f"{host}:{port}"]


def load(environ: dict[str, str] | None = None, for_serving: bool = True) -> Settings:
    """Read and validate the env contract. Raises ConfigError listing every problem found.

    ``for_serving=False`` (migrate, wait-for-backend) checks only what a database job needs: the
    database URIs, not the artifact settings or the basic-auth admin and secret key.
    """
    environ = dict(os.environ if environ is None else environ)
    problems: list[str] = []

    def get(suffix: str) -> str | None:
        try:
            return read_env(PREFIX + suffix, environ)
        except ConfigError as e:
            problems.extend(e.problems)
            return None

    s = Settings()
    s.role = (get("ROLE") or "tracking").strip().lower()
    s.backend_store_uri = get("BACKEND_STORE_URI")
    s.registry_store_uri = get("REGISTRY_STORE_URI")
    s.auth_database_uri = get("AUTH_DATABASE_URI")
    s.database_job = not for_serving
    for uri in (s.backend_store_uri, s.registry_store_uri, s.auth_database_uri):
        register_uri(uri)
    s.artifacts_destination = get("ARTIFACTS_DESTINATION")
    s.default_artifact_root = get("DEFAULT_ARTIFACT_ROOT")
    register_uri(s.artifacts_destination)
    register_uri(s.default_artifact_root)
    s.host = get("HOST") or s.host
    s.port = _int(PREFIX + "PORT", get("PORT"), s.port, problems, 1, 65535)
    s.workers = _int(PREFIX + "WORKERS", get("WORKERS"), s.workers, problems, 1, 64)
    s.allowed_hosts = get("ALLOWED_HOSTS")
    s.pod_ips = _addresses(PREFIX + "POD_IPS", get("POD_IPS"), problems)
    s.cors_allowed_origins = get("CORS_ALLOWED_ORIGINS")
    s.auth = (get("AUTH") or "none").strip().lower()
    s.kubernetes_audience = get("KUBERNETES_AUDIENCE")
    s.kubernetes_namespace = get("KUBERNETES_NAMESPACE")
    s.kubernetes_name = get("KUBERNETES_NAME")
    s.oidc_admin_group = get("OIDC_ADMIN_GROUP")
    s.admin_username = get("ADMIN_USERNAME")
    s.admin_password = get("ADMIN_PASSWORD")
    register_secret(s.admin_password)
    s.auth_cache_ttl_seconds = _int(
        PREFIX + "AUTH_CACHE_TTL_SECONDS", get("AUTH_CACHE_TTL_SECONDS"), s.auth_cache_ttl_seconds, problems, 0
    )
    try:
        s.secret_key = read_env(SECRET_KEY_VAR, environ)
    except ConfigError as e:
        problems.extend(e.problems)
    register_secret(s.secret_key)
    for var in ("AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING"):
        register_secret(environ.get(var))
    s.expose_prometheus = _bool(PREFIX + "EXPOSE_PROMETHEUS", get("EXPOSE_PROMETHEUS"), False, problems)
    s.metrics_port = _int(PREFIX + "METRICS_PORT", get("METRICS_PORT"), s.metrics_port, problems, 1, 65535)
    s.metrics_host = get("METRICS_HOST") or s.host
    if s.expose_prometheus and s.metrics_port == s.port:
        problems.append(
            f"{PREFIX}METRICS_PORT={s.metrics_port} is the API port: metrics need a port of their own"
        )
    s.max_upload_bytes = _byte_size(PREFIX + "MAX_UPLOAD_SIZE", get("MAX_UPLOAD_SIZE"), problems)
    s.scratch_dir = Path(get("SCRATCH_DIR") or "/tmp")
    s.keep_alive_timeout = _int(PREFIX + "KEEP_ALIVE_TIMEOUT", get("KEEP_ALIVE_TIMEOUT"), None, problems, 1)
    s.asgi_shortcut = _bool(PREFIX + "ASGI_SHORTCUT", get("ASGI_SHORTCUT"), True, problems)
    wait = get("BACKEND_WAIT_SECONDS")
    if wait is not None:
        try:
            s.backend_wait_seconds = float(wait)
            if s.backend_wait_seconds < 0:
                raise ValueError
        except ValueError:
            problems.append(f"{PREFIX}BACKEND_WAIT_SECONDS={wait!r}: expected a number of seconds >= 0")

    serve_raw = get("SERVE_ARTIFACTS")
    default_serve = not (s.role == "tracking" and s.default_artifact_root and not s.artifacts_destination)
    s.serve_artifacts = _bool(PREFIX + "SERVE_ARTIFACTS", serve_raw, default_serve, problems)

    # --- each value alone
    if s.role not in ("tracking", "artifacts"):
        problems.append(f"{PREFIX}ROLE={s.role!r}: expected tracking or artifacts")
    if s.auth not in ("none", "basic", "kubernetes", "oidc"):
        problems.append(f"{PREFIX}AUTH={s.auth!r}: expected none, basic, kubernetes or oidc")
    if s.auth == "oidc" and s.host not in ("127.0.0.1", "::1", "localhost"):
        # The sidecar's sign-in is the only check: a server reachable on the pod's IP bypasses it.
        problems.append(f"{PREFIX}AUTH=oidc needs {PREFIX}HOST=127.0.0.1 (behind the sign-in sidecar), not {s.host!r}")
    if s.oidc_admin_group and s.auth != "oidc":
        problems.append(f"{PREFIX}OIDC_ADMIN_GROUP is only used with {PREFIX}AUTH=oidc")
    if s.auth == "kubernetes":
        for name, val in (("KUBERNETES_AUDIENCE", s.kubernetes_audience), ("KUBERNETES_NAMESPACE", s.kubernetes_namespace),
                          ("KUBERNETES_NAME", s.kubernetes_name)):
            if not val:
                problems.append(f"{PREFIX}AUTH=kubernetes needs {PREFIX}{name}")
    for name, uri in (
        ("BACKEND_STORE_URI", s.backend_store_uri),
        ("REGISTRY_STORE_URI", s.registry_store_uri),
        ("AUTH_DATABASE_URI", s.auth_database_uri),
    ):
        if uri:
            _check_db_uri(PREFIX + name, uri, problems, file_ok=name != "AUTH_DATABASE_URI")
    for name, uri in (
        ("ARTIFACTS_DESTINATION", s.artifacts_destination),
        ("DEFAULT_ARTIFACT_ROOT", s.default_artifact_root),
    ):
        if uri:
            _check_artifact_uri(PREFIX + name, uri, problems)

    for name, uri in (("BACKEND_STORE_URI", s.backend_store_uri), ("REGISTRY_STORE_URI", s.registry_store_uri)):
        if is_file_store(uri) and environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
            problems.append(
                f"{PREFIX}{name}={uri}: MLflow 3.18 keeps the file store in maintenance mode and refuses "
                "it unless MLFLOW_ALLOW_FILE_STORE=true is set; prefer sqlite:////data/mlflow.db "
                "(`mlflow migrate-filestore` moves existing data)"
            )

    # --- contradictions between values
    if not for_serving:
        if problems:
            raise ConfigError(problems)
        return s
    if s.role == "artifacts":
        for name, uri in (("BACKEND_STORE_URI", s.backend_store_uri), ("REGISTRY_STORE_URI", s.registry_store_uri)):
            if uri:
                problems.append(
                    f"{PREFIX}ROLE=artifacts with {PREFIX}{name} set: an artifacts-only server has no "
                    "database; remove one of them"
                )
        if serve_raw is not None and not s.serve_artifacts:
            problems.append(
                f"{PREFIX}ROLE=artifacts with {PREFIX}SERVE_ARTIFACTS=false: an artifacts-only server "
                "exists to serve artifacts"
            )
        if not s.artifacts_destination:
            problems.append(f"{PREFIX}ROLE=artifacts needs {PREFIX}ARTIFACTS_DESTINATION (where the artifacts go)")
        if s.default_artifact_root:
            problems.append(
                f"{PREFIX}ROLE=artifacts with {PREFIX}DEFAULT_ARTIFACT_ROOT set: the default artifact "
                "root belongs to the tracking server"
            )
        if s.auth == "kubernetes":
            problems.append(f"{PREFIX}AUTH=kubernetes with {PREFIX}ROLE=artifacts: not supported yet")
        if s.auth == "basic":
            problems.append(
                f"{PREFIX}AUTH=basic with {PREFIX}ROLE=artifacts: MLflow's basic-auth checks artifact "
                "permissions against the tracking database, which an artifacts-only server does not "
                "have; enable basic-auth on the tracking server and route artifact traffic through it"
            )
    elif s.role == "tracking":
        if not s.backend_store_uri:
            problems.append(
                f"{PREFIX}BACKEND_STORE_URI is required for the tracking role "
                "(e.g. sqlite:////data/mlflow.db or a postgresql:// URI from a Secret)"
            )
        if s.serve_artifacts:
            if not s.artifacts_destination:
                problems.append(
                    f"{PREFIX}SERVE_ARTIFACTS=true needs {PREFIX}ARTIFACTS_DESTINATION (otherwise MLflow "
                    "would write artifacts into the container's scratch directory and lose them)"
                )
            if s.default_artifact_root and not s.default_artifact_root.startswith(("mlflow-artifacts:", "http")):
                problems.append(
                    f"{PREFIX}SERVE_ARTIFACTS=true with {PREFIX}DEFAULT_ARTIFACT_ROOT="
                    f"{s.default_artifact_root}: proxied clients write through the server "
                    "(mlflow-artifacts:/), not to the store directly; drop the default artifact root "
                    "or set SERVE_ARTIFACTS=false"
                )
        else:
            if s.artifacts_destination:
                problems.append(
                    f"{PREFIX}SERVE_ARTIFACTS=false with {PREFIX}ARTIFACTS_DESTINATION set: the "
                    "destination is only used when the server proxies artifacts; set one or the other"
                )
            if not s.default_artifact_root:
                problems.append(
                    f"{PREFIX}SERVE_ARTIFACTS=false needs {PREFIX}DEFAULT_ARTIFACT_ROOT (the store "
                    "clients write to directly)"
                )
    if s.auth == "basic":
        if not s.secret_key:
            problems.append(
                f"{PREFIX}AUTH=basic needs {SECRET_KEY_VAR} (one value shared by every replica, from a Secret)"
            )
        if not s.auth_database_uri:
            problems.append(f"{PREFIX}AUTH=basic needs {PREFIX}AUTH_DATABASE_URI")
        if not s.admin_username:
            problems.append(f"{PREFIX}AUTH=basic needs {PREFIX}ADMIN_USERNAME")
        if not s.admin_password:
            problems.append(f"{PREFIX}AUTH=basic needs {PREFIX}ADMIN_PASSWORD")
        elif len(s.admin_password) < MIN_ADMIN_PASSWORD:
            problems.append(
                f"{PREFIX}ADMIN_PASSWORD is {len(s.admin_password)} characters long; MLflow requires "
                f"at least {MIN_ADMIN_PASSWORD}"
            )
    if problems:
        raise ConfigError(problems)
    return s
