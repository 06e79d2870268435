"""What `spec.auth.type: OIDC` adds to the server's pods: an oauth2-proxy sidecar.

The proxy takes the pod's API port (`http`, 5000) and the server listens on 127.0.0.1:5001, so
nothing reaches MLflow without passing the proxy (not the Service, not a pod IP, not a
NetworkPolicy gap). Browsers are sent to the provider and come back with an encrypted session
cookie; API clients get 401 instead of a redirect and may send the provider's ID token as bearer
token, which the proxy checks (issuer, signature, expiry, audience = client id). Allowed groups
are the proxy's check (403); the admin group's delete right is the server's
(`mlflow_entrypoint.oidcgate`, from the groups header the proxy sets after stripping any a client
sent).

In Split and ArtifactsOnly mode the artifacts pods get the same sidecar, so no artifact route is
left open; in Split the tracking pods' own calls to the artifacts pods carry a generated
credential that only the artifacts pods' sidecar accepts (see INTERNAL_USER below).

Sessions live in the cookie itself, encrypted with the cookie secret, which the operator generates
once in the Secret `<name>-oidc` and every replica reads: a browser signed in through one pod is
signed in on all of them, and the sign-in's CSRF cookie is checked by whichever pod the callback
reaches.
"""
from __future__ import annotations

from typing import Any

from ..api import TrackingServer
from ..constants import (
    HEALTH_PATH,
    HTTP_PORT,
    HTTP_PORT_NAME,
    OAUTH2_PROXY_IMAGE,
    OAUTH2_PROXY_PING_PATH,
    READY_PATH,
    SERVER_LOOPBACK_PORT,
)
from . import naming
from .environment import Env, from_secret, from_secret_key

from .secrets import OIDC_COOKIE_SECRET_KEY as COOKIE_SECRET_KEY
CONTAINER = "oauth2-proxy"
CA_VOLUME = "oidc-ca"
CA_DIR = "/etc/mlflow-operator/oidc-ca"
CA_FILE = "ca.crt"
# Requests of API clients: they get 401 without a valid session or token, never a redirect to
# the provider's sign-in page (which a client cannot follow).
API_ROUTES = ("^/api/", "^/ajax-api/", "^/graphql", "^/version$")
# The kubelet's probes reach the server through the proxy without a session.
PROBE_ROUTES = (f"GET=^{HEALTH_PATH}$", f"GET=^{READY_PATH}$")
# The request log without the request URI: the sign-in callback's query carries the
# authorization code, which must not be logged.
REQUEST_LOG_FORMAT = (
    "{{.Client}} - {{.RequestID}} - {{.Username}} [{{.Timestamp}}] {{.Host}} {{.RequestMethod}} "
    "{{.Upstream}} {{.StatusCode}} {{.ResponseSize}} {{.RequestDuration}}"
)


def secret_name(ts: TrackingServer) -> str:
    return naming.oidc_secret_name(ts)


# Split mode: the tracking pods read and write artifacts through the artifacts pods' Service on
# behalf of users who already signed in at the tracking pods' proxy (the UI's downloads, the
# server-side artifact calls). Their server sends a generated basic-auth credential
# (MLFLOW_TRACKING_USERNAME/_PASSWORD, which MLflow's HTTP artifact repository sends), which the
# artifacts pods' proxy checks against an htpasswd file from the same generated Secret; users
# still sign in or send their token. The credential's group is allowed only on the artifacts pods.
from .secrets import OIDC_INTERNAL_USER as INTERNAL_USER  # noqa: E402
INTERNAL_GROUP = "mlflow-operator:tracking-pods"
INTERNAL_VOLUME = "oidc-internal"
INTERNAL_DIR = "/etc/mlflow-operator/oidc-internal"


def internal_secret_name(ts: TrackingServer) -> str:
    return naming.oidc_internal_secret_name(ts)


def tracking_pods_call_artifacts_pods(ts: TrackingServer) -> bool:
    return ts.spec.artifacts.mode == "Split"


def tracking_internal_env(ts: TrackingServer) -> Env:
    """The tracking pods' server: the credential their artifact calls to the artifacts pods carry."""
    from .secrets import OIDC_INTERNAL_PASSWORD_KEY

    return [
        {"name": "MLFLOW_TRACKING_USERNAME", "value": INTERNAL_USER},
        from_secret_key("MLFLOW_TRACKING_PASSWORD", internal_secret_name(ts), OIDC_INTERNAL_PASSWORD_KEY),
    ]


def upstream() -> str:
    return f"http://127.0.0.1:{SERVER_LOOPBACK_PORT}/"


def redirect_url(ts: TrackingServer) -> str | None:
    oidc = ts.spec.auth.oidc
    if oidc.redirect_url:
        return oidc.redirect_url
    hosts = [h for h in naming.exposure_hosts(ts) if "*" not in h]
    if not hosts:
        return None  # derived from each request's host (kubectl port-forward)
    return f"{'https' if naming.exposure_tls(ts) else 'http'}://{hosts[0]}/oauth2/callback"


def cookie_secure(ts: TrackingServer) -> bool:
    url = redirect_url(ts)
    return url.startswith("https://") if url else naming.exposure_tls(ts)


def proxy_args(ts: TrackingServer, component: str = naming.TRACKING) -> list[str]:
    oidc = ts.spec.auth.oidc
    internal = component == naming.ARTIFACTS and tracking_pods_call_artifacts_pods(ts)
    args = [
        f"--http-address=0.0.0.0:{HTTP_PORT}",
        f"--upstream={upstream()}",
        "--provider=oidc",
        f"--oidc-issuer-url={oidc.issuer_url}",
        f"--client-id={oidc.client_id}",
        f"--scope={' '.join(oidc.scopes)}",
        f"--oidc-groups-claim={oidc.groups_claim}",
        # Who may sign in is decided by the groups below (or the provider alone), not by e-mail domain.
        "--email-domain=*",
        "--skip-jwt-bearer-tokens=true",
        "--skip-provider-button=true",
        "--code-challenge-method=S256",
        # oauth2-proxy asks for consent at every sign-in by default (prompt=consent); the
        # provider's own policy decides instead.
        "--approval-prompt=auto",
        "--reverse-proxy=true",
        "--pass-user-headers=true",
        f"--cookie-name=_mlflow_{ts.name.replace('-', '_')}",
        f"--cookie-secure={'true' if cookie_secure(ts) else 'false'}",
        "--cookie-samesite=lax",
        f"--upstream-timeout={ts.spec.http.timeout_seconds}s",
        "--silence-ping-logging=true",
        f"--request-logging-format={REQUEST_LOG_FORMAT}",
    ]
    args += [f"--api-route={route}" for route in API_ROUTES]
    args += [f"--skip-auth-route={route}" for route in PROBE_ROUTES]
    args += [f"--allowed-group={group}" for group in oidc.allowed_groups or ()]
    if oidc.admin_group and oidc.allowed_groups:
        args.append(f"--allowed-group={oidc.admin_group}")
    if internal:
        from .secrets import OIDC_HTPASSWD_KEY

        args += [f"--htpasswd-file={INTERNAL_DIR}/{OIDC_HTPASSWD_KEY}", f"--htpasswd-user-group={INTERNAL_GROUP}",
                 "--display-htpasswd-form=false"]
        if oidc.allowed_groups:
            args.append(f"--allowed-group={INTERNAL_GROUP}")
    url = redirect_url(ts)
    if url:
        args.append(f"--redirect-url={url}")
    for host in naming.exposure_hosts(ts):
        args.append(f"--whitelist-domain={host.removeprefix('*')}")
    if oidc.ca_config_map_ref:
        args += [f"--provider-ca-file={CA_DIR}/{CA_FILE}", "--use-system-trust-store=false"]
    return args


def proxy_env(ts: TrackingServer) -> Env:
    return [
        from_secret("OAUTH2_PROXY_CLIENT_SECRET", ts.spec.auth.oidc.client_secret),
        from_secret_key("OAUTH2_PROXY_COOKIE_SECRET", secret_name(ts), COOKIE_SECRET_KEY),
    ]


def _probe(path: str, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": HTTP_PORT_NAME}, "timeoutSeconds": 5, **timing}


def proxy_container(ts: TrackingServer, security_context: dict[str, Any], component: str = naming.TRACKING) -> dict[str, Any]:
    oidc = ts.spec.auth.oidc
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": oidc.proxy_image or OAUTH2_PROXY_IMAGE,
        "imagePullPolicy": ts.spec.image_pull_policy,
        "command": ["/bin/oauth2-proxy"],
        "args": proxy_args(ts, component),
        "env": proxy_env(ts),
        "ports": [{"name": HTTP_PORT_NAME, "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": security_context,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # Start-up and readiness pass through to the server's /health and /readyz (skip-auth
        # routes), so the pod is ready only when both containers answer; liveness is the proxy's own.
        "startupProbe": _probe(HEALTH_PATH, periodSeconds=5, failureThreshold=60),
        "readinessProbe": _probe(READY_PATH, periodSeconds=10, failureThreshold=3),
        "livenessProbe": _probe(OAUTH2_PROXY_PING_PATH, periodSeconds=20, failureThreshold=3),
    }
    mounts = []
    if oidc.ca_config_map_ref:
        mounts.append({"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": True})
    if component == naming.ARTIFACTS and tracking_pods_call_artifacts_pods(ts):
        mounts.append({"name": INTERNAL_VOLUME, "mountPath": INTERNAL_DIR, "readOnly": True})
    if mounts:
        container["volumeMounts"] = mounts
    return container


def proxy_volumes(ts: TrackingServer, component: str = naming.TRACKING) -> list[dict[str, Any]]:
    result = []
    ref = ts.spec.auth.oidc.ca_config_map_ref
    if ref:
        result.append({"name": CA_VOLUME, "configMap": {"name": ref.name, "items": [{"key": ref.key, "path": CA_FILE}]}})
    if component == naming.ARTIFACTS and tracking_pods_call_artifacts_pods(ts):
        from .secrets import OIDC_HTPASSWD_KEY

        result.append({"name": INTERNAL_VOLUME, "secret": {
            "secretName": internal_secret_name(ts), "items": [{"key": OIDC_HTPASSWD_KEY, "path": OIDC_HTPASSWD_KEY}]}})
    return result


def server_probes() -> dict[str, Any]:
    """The server listens on loopback, where no kubelet httpGet reaches: its own start-up and
    liveness are the entrypoint asking it from inside the container."""
    def probe(**timing: int) -> dict[str, Any]:
        return {"exec": {"command": ["mlflow-entrypoint", "probe", HEALTH_PATH]}, "timeoutSeconds": 10, **timing}

    return {
        "startupProbe": probe(periodSeconds=10, failureThreshold=30),
        "livenessProbe": probe(periodSeconds=30, failureThreshold=3),
    }
