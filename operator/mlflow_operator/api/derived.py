"""Facts derived from a spec, used by the validation rules and by the renderer alike, so that
what is validated is exactly what is rendered."""
from __future__ import annotations

import re

from ..constants import LOCAL_ARTIFACTS_PATH
from .spec import HTTP_URL, OBJECT_STORE_URI, VOLUME_PATH, TrackingServerSpec

OBJECT_STORE_URI_RE = re.compile(OBJECT_STORE_URI)
VOLUME_PATH_RE = re.compile(VOLUME_PATH)
HTTP_URL_RE = re.compile(HTTP_URL)


def has_backend(spec: TrackingServerSpec) -> bool:
    """Every mode but ArtifactsOnly runs a tracking backend."""
    return spec.artifacts.mode != "ArtifactsOnly"


def backend_type(spec: TrackingServerSpec) -> str | None:
    if not has_backend(spec):
        return None
    return spec.backend_store.type if spec.backend_store else "SQLite"


def embedded_backend(spec: TrackingServerSpec) -> bool:
    """SQLite or FileStore on the volume: one pod only."""
    return backend_type(spec) in ("SQLite", "FileStore")


def serves_artifacts(spec: TrackingServerSpec) -> bool:
    return spec.artifacts.mode != "Direct"


def artifacts_destination(spec: TrackingServerSpec) -> str | None:
    """Where the server stores artifacts; Proxied mode defaults to the volume."""
    if not serves_artifacts(spec):
        return None
    return spec.artifacts.destination or LOCAL_ARTIFACTS_PATH


def local_artifacts(spec: TrackingServerSpec) -> bool:
    destination = artifacts_destination(spec)
    return destination is not None and destination.startswith("/")


def basic_auth(spec: TrackingServerSpec) -> bool:
    return spec.auth.type == "Basic"


def kubernetes_auth(spec: TrackingServerSpec) -> bool:
    return spec.auth.type == "Kubernetes"


def oidc_auth(spec: TrackingServerSpec) -> bool:
    return spec.auth.type == "OIDC"


def sqlite_auth_db(spec: TrackingServerSpec) -> bool:
    return basic_auth(spec) and spec.auth.database_uri is None


def tracking_pods_may_be_many(spec: TrackingServerSpec) -> bool:
    return spec.replicas > 1 or spec.autoscaling is not None


def artifacts_pod_replicas(spec: TrackingServerSpec) -> int:
    """Replicas of the artifacts-only Deployment in Split mode."""
    return spec.artifacts.replicas if spec.artifacts.replicas is not None else 1


def local_artifacts_on_many_pods(spec: TrackingServerSpec) -> bool:
    if not local_artifacts(spec):
        return False
    if spec.artifacts.mode == "Split":
        return artifacts_pod_replicas(spec) > 1
    return tracking_pods_may_be_many(spec)


def tracking_needs_volume(spec: TrackingServerSpec) -> bool:
    """Whether the tracking (metadata) pods mount /data. In Split mode local artifacts live on
    the artifacts pods, not here."""
    own_artifacts = local_artifacts(spec) and spec.artifacts.mode != "Split"
    return embedded_backend(spec) or own_artifacts or sqlite_auth_db(spec)


def artifacts_pods_need_volume(spec: TrackingServerSpec) -> bool:
    return spec.artifacts.mode == "Split" and local_artifacts(spec)


def needs_volume(spec: TrackingServerSpec) -> bool:
    return tracking_needs_volume(spec) or artifacts_pods_need_volume(spec)
