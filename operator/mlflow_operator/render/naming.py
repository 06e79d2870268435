"""Names, labels and references of the children of one TrackingServer."""
from __future__ import annotations

import re
from typing import Any

from ..api import TrackingServer
from ..constants import API_VERSION, DEFAULT_IMAGE, HTTP_PORT, KIND

TRACKING = "tracking"
ARTIFACTS = "artifacts"
MIGRATION = "migration"


def tracking_name(ts: TrackingServer) -> str:
    """The main Deployment and the client-facing Service, ServiceAccount, Ingress, ...

    The main Deployment's pods are component `tracking` in every mode, ArtifactsOnly included
    (where MLFLOW_OPERATOR_ROLE says `artifacts`): Deployment selectors are immutable, so a change
    of mode must not change them."""
    return ts.name


def artifacts_name(ts: TrackingServer) -> str:
    """Split mode: the artifacts-only Deployment and its Service."""
    return f"{ts.name}-artifacts"


def volume_claim_name(ts: TrackingServer) -> str:
    return f"{ts.name}-data"


def admin_secret_name(ts: TrackingServer) -> str:
    return f"{ts.name}-admin"


def oidc_secret_name(ts: TrackingServer) -> str:
    return f"{ts.name}-oidc"


def oidc_internal_secret_name(ts: TrackingServer) -> str:
    return f"{ts.name}-oidc-internal"


def flask_secret_name(ts: TrackingServer) -> str:
    return f"{ts.name}-flask-secret-key"


def migration_job_name(ts: TrackingServer, config_digest: str) -> str:
    # Job pod templates are immutable: a new image or database gets a new Job.
    return f"{ts.name}-migrate-{config_digest[:8]}"


def migration_guard_name(ts: TrackingServer) -> str:
    return f"{ts.name}-migration-guard"


def service_host(ts: TrackingServer, service: str) -> str:
    return f"{service}.{ts.namespace}.svc"


def image(ts: TrackingServer) -> str:
    return ts.spec.image or DEFAULT_IMAGE


_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def image_version(image_ref: str) -> str | None:
    """The tag of an image reference, if it can be a label value (used as app.kubernetes.io/version)."""
    name = image_ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    tag = last.rsplit(":", 1)[1]
    return tag if _LABEL_VALUE.match(tag) else None


def selector_labels(ts: TrackingServer, component: str) -> dict[str, str]:
    """Labels Deployments select their pods with (immutable once created)."""
    return {
        "app.kubernetes.io/name": "mlflow",
        "app.kubernetes.io/instance": ts.name,
        "app.kubernetes.io/component": component,
    }


# The init container that checks the stores from the pod (its termination message is read by the operator).
CHECK_CONTAINER = "check"


def labels(ts: TrackingServer, component: str) -> dict[str, str]:
    result = {**selector_labels(ts, component), "app.kubernetes.io/managed-by": "mlflow-operator"}
    version = image_version(image(ts))
    if version:
        result["app.kubernetes.io/version"] = version
    return result


def instance_labels(ts: TrackingServer) -> dict[str, str]:
    """Every pod of this TrackingServer, whatever its component."""
    return {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": ts.name}


def status_selector(ts: TrackingServer) -> str:
    """status.selector: the tracking pods, for the scale subresource and HPAs."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(ts, TRACKING).items())


def owner_references(ts: TrackingServer) -> list[dict[str, Any]]:
    """Garbage collection deletes owned children with the TrackingServer. Without a uid (a file
    rendered by the CLI) there is nothing to point at, so nothing is owned."""
    if not ts.metadata.uid:
        return []
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": ts.name,
            "uid": ts.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def object_meta(
    ts: TrackingServer,
    name: str,
    component: str,
    *,
    owned: bool = True,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ts.namespace, "labels": labels(ts, component)}
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    refs = owner_references(ts) if owned else []
    if refs:
        meta["ownerReferences"] = refs
    return meta


def exposure_hosts(ts: TrackingServer) -> list[str]:
    spec = ts.spec
    if spec.ingress:
        return list(spec.ingress.hosts)
    if spec.gateway and spec.gateway.hostnames:
        return list(spec.gateway.hostnames)
    return []


def exposure_tls(ts: TrackingServer) -> bool:
    if ts.spec.ingress:
        return ts.spec.ingress.tls_secret_name is not None
    if ts.spec.gateway:
        return ts.spec.gateway.tls
    return False


def client_url(ts: TrackingServer) -> str:
    """What clients set as MLFLOW_TRACKING_URI (for status.url): the first exposed host, or the
    Service inside the cluster."""
    hosts = [h for h in exposure_hosts(ts) if "*" not in h]
    if hosts:
        return f"{'https' if exposure_tls(ts) else 'http'}://{hosts[0]}"
    return f"http://{service_host(ts, tracking_name(ts))}:{HTTP_PORT}"
