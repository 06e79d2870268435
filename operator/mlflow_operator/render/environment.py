"""The environment of the server containers: the contract with the image's `mlflow-entrypoint`.

Every setting is an env var (see the common brief): MLFLOW_OPERATOR_* for the entrypoint, the
storage libraries' own names for credentials. Secrets are referenced (secretKeyRef), never copied.
"""
from __future__ import annotations

from typing import Any

from ..api import TrackingServer
from ..api import derived as d
from ..api.base import SecretValue
from ..constants import (
    ARTIFACT_PROXY_API,
    DEFAULT_CLUSTER_DOMAIN,
    EMBEDDED_AUTH_DB_URI,
    EMBEDDED_FILE_STORE_URI,
    EMBEDDED_SQLITE_URI,
    HTTP_PORT,
    METRICS_PORT,
    SCRATCH_DIR,
    SERVER_LOOPBACK_PORT,
)
from . import kubeauth, naming
from .secrets import ADMIN_PASSWORD_KEY, ADMIN_USERNAME_KEY, FLASK_SECRET_KEY

GCS_CREDENTIALS_DIR = "/var/run/secrets/mlflow-operator/gcs"
GCS_CREDENTIALS_FILE = "credentials.json"
POD_IPS = "MLFLOW_OPERATOR_POD_IPS"

Env = list[dict[str, Any]]


def value(name: str, val: str) -> dict[str, Any]:
    return {"name": name, "value": val}


def from_secret(name: str, ref: SecretValue) -> dict[str, Any]:
    selector = ref.secret_key_ref
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": selector.name, "key": selector.key}}}


def from_secret_key(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# Host headers of the loopback addresses on any port (a `kubectl port-forward` picks its local port),
# and of the private IPv4 and IPv6 (fc00::/7) ranges that ClusterIPs and pod IPs come from, as stock
# `mlflow server` allows by default. An IP literal is no DNS-rebinding vector: that attack needs a
# name. `[` starts a character class in MLflow's fnmatch patterns, so a literal one is `[[]`.
LOOPBACK_HOSTS = ("localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*", "[::1]", "[[]::1]:*")
PRIVATE_ADDRESS_HOSTS = ("10.*", *(f"172.{i}.*" for i in range(16, 32)), "192.168.*", "[[]f[cd][0-9a-f][0-9a-f]:*")


def allowed_hosts(ts: TrackingServer, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> list[str]:
    """Host headers the server accepts (MLflow's DNS-rebinding protection; /health is exempt):
    the exposed hosts, every DNS name of the Services (with the cluster's domain), loopback on any
    port and private addresses. The pod's own addresses, private or not, are added by the
    entrypoint from MLFLOW_OPERATOR_POD_IPS (see `pod_ips_env`)."""
    if ts.spec.http.allowed_hosts is not None:
        return list(ts.spec.http.allowed_hosts)
    services = [naming.tracking_name(ts)]
    if ts.spec.artifacts.mode == "Split":
        services.append(naming.artifacts_name(ts))
    names = naming.exposure_hosts(ts)
    for service in services:
        for dns in (service, f"{service}.{ts.namespace}", naming.service_host(ts, service),
                    f"{naming.service_host(ts, service)}.{cluster_domain}"):
            names += [dns, f"{dns}:{HTTP_PORT}"]
    return _unique(names + list(LOOPBACK_HOSTS) + list(PRIVATE_ADDRESS_HOSTS))


def pod_ips_env(ts: TrackingServer) -> Env:
    """The pod's IPs for the entrypoint, which allows each as a Host header in the right form
    (`[fd00::5]:5000`; the kubelet's $(POD_IP) expansion cannot add brackets). Only with the
    derived list: a spec's own allowedHosts is taken as written."""
    if ts.spec.http.allowed_hosts is not None:
        return []
    return [{"name": POD_IPS, "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}}]


def cors_allowed_origins(ts: TrackingServer) -> list[str]:
    """Origins whose browsers may call the API: the web UI's own origin behind the Ingress or
    HTTPRoute (MLflow blocks state-changing requests from any origin not listed)."""
    if ts.spec.http.cors_allowed_origins is not None:
        return list(ts.spec.http.cors_allowed_origins)
    schemes = ["https"] if naming.exposure_tls(ts) else ["https", "http"]
    return _unique([f"{scheme}://{host}" for host in naming.exposure_hosts(ts) for scheme in schemes])


def _backend_env(ts: TrackingServer) -> Env:
    store = ts.spec.backend_store
    kind = d.backend_type(ts.spec)
    if kind == "SQLite":
        return [value("MLFLOW_OPERATOR_BACKEND_STORE_URI", EMBEDDED_SQLITE_URI)]
    if kind == "FileStore":
        # MLflow refuses the deprecated file store unless this is set (MLflow's own variable).
        return [
            value("MLFLOW_OPERATOR_BACKEND_STORE_URI", EMBEDDED_FILE_STORE_URI),
            value("MLFLOW_ALLOW_FILE_STORE", "true"),
        ]
    env = [from_secret("MLFLOW_OPERATOR_BACKEND_STORE_URI", store.uri)]
    if store.registry_store_uri:
        env.append(from_secret("MLFLOW_OPERATOR_REGISTRY_STORE_URI", store.registry_store_uri))
    return env


def auth_database_env(ts: TrackingServer) -> Env:
    if ts.spec.auth.database_uri:
        return [from_secret("MLFLOW_OPERATOR_AUTH_DATABASE_URI", ts.spec.auth.database_uri)]
    return [value("MLFLOW_OPERATOR_AUTH_DATABASE_URI", EMBEDDED_AUTH_DB_URI)]


def _admin_secret(ts: TrackingServer) -> tuple[str, str, str]:
    """(Secret, username key, password key) of the basic-auth admin."""
    ref = ts.spec.auth.admin_secret_ref
    if ref:
        return ref.name, ref.username_key, ref.password_key
    return naming.admin_secret_name(ts), ADMIN_USERNAME_KEY, ADMIN_PASSWORD_KEY


def _auth_env(ts: TrackingServer) -> Env:
    if d.kubernetes_auth(ts.spec):
        return [
            value("MLFLOW_OPERATOR_AUTH", "kubernetes"),
            value("MLFLOW_OPERATOR_KUBERNETES_AUDIENCE", kubeauth.audience(ts)),
            value("MLFLOW_OPERATOR_KUBERNETES_NAMESPACE", ts.namespace),
            value("MLFLOW_OPERATOR_KUBERNETES_NAME", ts.name),
        ]
    if d.oidc_auth(ts.spec):
        env = [value("MLFLOW_OPERATOR_AUTH", "oidc")]
        if ts.spec.auth.oidc.admin_group:
            env.append(value("MLFLOW_OPERATOR_OIDC_ADMIN_GROUP", ts.spec.auth.oidc.admin_group))
        return env
    if not d.basic_auth(ts.spec):
        return [value("MLFLOW_OPERATOR_AUTH", "none")]
    secret, user_key, password_key = _admin_secret(ts)
    return [
        value("MLFLOW_OPERATOR_AUTH", "basic"),
        *auth_database_env(ts),
        from_secret_key("MLFLOW_OPERATOR_ADMIN_USERNAME", secret, user_key),
        from_secret_key("MLFLOW_OPERATOR_ADMIN_PASSWORD", secret, password_key),
        from_secret_key("MLFLOW_FLASK_SERVER_SECRET_KEY", naming.flask_secret_name(ts), FLASK_SECRET_KEY),
    ]


def storage_credentials_env(ts: TrackingServer) -> Env:
    """Object store settings and credentials, for the pods that touch the store."""
    artifacts = ts.spec.artifacts
    env: Env = []
    if artifacts.s3:
        s3 = artifacts.s3
        if s3.endpoint_url:
            env.append(value("MLFLOW_S3_ENDPOINT_URL", s3.endpoint_url))
        if s3.region:
            env.append(value("AWS_DEFAULT_REGION", s3.region))
        if s3.ignore_tls:
            env.append(value("MLFLOW_S3_IGNORE_TLS", "true"))
        if s3.access_key_id:
            env.append(from_secret("AWS_ACCESS_KEY_ID", s3.access_key_id))
        if s3.secret_access_key:
            env.append(from_secret("AWS_SECRET_ACCESS_KEY", s3.secret_access_key))
    if artifacts.gcs and artifacts.gcs.endpoint_url:
        env.append(value("STORAGE_EMULATOR_HOST", artifacts.gcs.endpoint_url))
    if artifacts.gcs and artifacts.gcs.service_account_key:
        env.append(value("GOOGLE_APPLICATION_CREDENTIALS", f"{GCS_CREDENTIALS_DIR}/{GCS_CREDENTIALS_FILE}"))
    if artifacts.azure:
        if artifacts.azure.connection_string:
            env.append(from_secret("AZURE_STORAGE_CONNECTION_STRING", artifacts.azure.connection_string))
        if artifacts.azure.access_key:
            env.append(from_secret("AZURE_STORAGE_ACCESS_KEY", artifacts.azure.access_key))
    return env


_BINARY_SUFFIXES = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


def byte_count(quantity: int | str) -> int:
    """A binary byte quantity (spec.http.maxUploadSize: 5Gi, 512Mi, 0, or an integer) in bytes."""
    if isinstance(quantity, int):
        return quantity
    suffix = quantity[-2:]
    if suffix in _BINARY_SUFFIXES:
        return int(quantity[:-2]) * _BINARY_SUFFIXES[suffix]
    return int(quantity)


def _common_server_env(ts: TrackingServer, role: str) -> Env:
    spec = ts.spec
    # Behind the OIDC sidecar the server listens on the pod's loopback only: nothing bypasses the proxy.
    host, port = ("127.0.0.1", SERVER_LOOPBACK_PORT) if d.oidc_auth(spec) else ("0.0.0.0", HTTP_PORT)
    return [
        value("MLFLOW_OPERATOR_ROLE", role),
        value("MLFLOW_OPERATOR_HOST", host),
        value("MLFLOW_OPERATOR_PORT", str(port)),
        value("MLFLOW_OPERATOR_WORKERS", str(spec.workers)),
        value("MLFLOW_OPERATOR_SCRATCH_DIR", SCRATCH_DIR),
        value("MLFLOW_OPERATOR_KEEP_ALIVE_TIMEOUT", str(spec.http.keep_alive_timeout_seconds)),
        # enforced by the server itself: not every client comes through an NGINX Ingress
        value("MLFLOW_OPERATOR_MAX_UPLOAD_SIZE", str(byte_count(spec.http.max_upload_size))),
        value("MLFLOW_OPERATOR_ASGI_SHORTCUT", "true" if spec.http.api_shortcut else "false"),
    ]


def _network_env(ts: TrackingServer, cluster_domain: str) -> Env:
    env = [value("MLFLOW_OPERATOR_ALLOWED_HOSTS", ",".join(allowed_hosts(ts, cluster_domain))), *pod_ips_env(ts)]
    origins = cors_allowed_origins(ts)
    if origins:
        env.append(value("MLFLOW_OPERATOR_CORS_ALLOWED_ORIGINS", ",".join(origins)))
    if ts.spec.metrics.enabled:
        env.append(value("MLFLOW_OPERATOR_EXPOSE_PROMETHEUS", "true"))
        env.append(value("MLFLOW_OPERATOR_METRICS_PORT", str(METRICS_PORT)))
        if d.oidc_auth(ts.spec):  # the API is on loopback; Prometheus scrapes the pod's IP
            env.append(value("MLFLOW_OPERATOR_METRICS_HOST", "0.0.0.0"))
    return env


def _extra_env(ts: TrackingServer) -> Env:
    return [e.dump() for e in ts.spec.pod_template.extra_env or ()]


def split_destination(ts: TrackingServer) -> str:
    """Split mode: metadata pods reach artifacts through the artifacts pods' proxy API (MLflow's
    HttpArtifactRepository), so they need no storage credentials."""
    host = naming.service_host(ts, naming.artifacts_name(ts))
    return f"http://{host}:{HTTP_PORT}{ARTIFACT_PROXY_API}"


def tracking_env(ts: TrackingServer, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> Env:
    """The main Deployment's server container (role `artifacts` in ArtifactsOnly mode)."""
    spec = ts.spec
    mode = spec.artifacts.mode
    if mode == "ArtifactsOnly":
        return artifacts_env(ts, cluster_domain)
    env = _common_server_env(ts, "tracking") + _backend_env(ts)
    if mode == "Direct":
        env += [
            value("MLFLOW_OPERATOR_SERVE_ARTIFACTS", "false"),
            value("MLFLOW_OPERATOR_DEFAULT_ARTIFACT_ROOT", spec.artifacts.default_artifact_root),
        ]
    elif mode == "Split":
        env += [
            value("MLFLOW_OPERATOR_SERVE_ARTIFACTS", "true"),
            value("MLFLOW_OPERATOR_ARTIFACTS_DESTINATION", split_destination(ts)),
        ]
    else:
        env += [
            value("MLFLOW_OPERATOR_SERVE_ARTIFACTS", "true"),
            value("MLFLOW_OPERATOR_ARTIFACTS_DESTINATION", d.artifacts_destination(spec)),
        ]
    env += _network_env(ts, cluster_domain) + _auth_env(ts)
    if mode == "Split" and d.oidc_auth(spec):
        from .oidc import tracking_internal_env

        env += tracking_internal_env(ts)
    if mode != "Split":  # Direct too: the web UI reads artifacts through the server
        env += storage_credentials_env(ts)
    return env + _extra_env(ts)


def artifacts_env(ts: TrackingServer, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> Env:
    """An artifacts-only server (`--artifacts-only`): no backend store, holds the credentials."""
    env = _common_server_env(ts, "artifacts") + [
        value("MLFLOW_OPERATOR_SERVE_ARTIFACTS", "true"),
        value("MLFLOW_OPERATOR_ARTIFACTS_DESTINATION", d.artifacts_destination(ts.spec)),
    ]
    return env + _network_env(ts, cluster_domain) + _auth_env(ts) + storage_credentials_env(ts) + _extra_env(ts)


def backend_wait_env(ts: TrackingServer) -> Env:
    """For the `wait-for-backend` init container."""
    store = ts.spec.backend_store
    return [
        from_secret("MLFLOW_OPERATOR_BACKEND_STORE_URI", store.uri),
        value("MLFLOW_OPERATOR_BACKEND_WAIT_SECONDS", str(store.wait_seconds)),
    ]


def external_migration_env(ts: TrackingServer) -> Env:
    """The migration Job's databases: those outside the pod (the shared, external ones)."""
    env: Env = []
    if d.backend_type(ts.spec) == "Database":
        env += _backend_env(ts)
    if d.basic_auth(ts.spec) and ts.spec.auth.database_uri:
        env += auth_database_env(ts)
    return env


def embedded_migration_env(ts: TrackingServer) -> Env:
    """The `migrate` init container's databases: the SQLite files on the pod's own volume."""
    env: Env = []
    if d.backend_type(ts.spec) == "SQLite":
        env += _backend_env(ts)
    if d.sqlite_auth_db(ts.spec):
        env += auth_database_env(ts)
    return env
