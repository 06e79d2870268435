"""The Ingress (NGINX annotations for large uploads and slow transfers)."""
from __future__ import annotations

from typing import Any

from ..api import TrackingServer
from ..constants import ARTIFACT_PROXY_PATHS, HTTP_PORT_NAME
from . import naming

NGINX = "nginx.ingress.kubernetes.io/"


def nginx_size(quantity: str) -> str:
    """A binary byte quantity (5Gi, 512Mi, 64Ki, 0) in NGINX's size syntax (5g, 512m, 64k, 0):
    NGINX's k/m/g are powers of 1024, so the numbers carry over exactly."""
    for suffix, nginx_suffix, factor in (("Ti", "g", 1024), ("Gi", "g", 1), ("Mi", "m", 1), ("Ki", "k", 1)):
        if quantity.endswith(suffix):
            return f"{int(quantity[: -len(suffix)]) * factor}{nginx_suffix}"
    return quantity


def nginx_annotations(ts: TrackingServer) -> dict[str, str]:
    http = ts.spec.http
    timeout = str(http.timeout_seconds)
    return {
        NGINX + "proxy-body-size": nginx_size(str(http.max_upload_size)),
        NGINX + "proxy-read-timeout": timeout,
        NGINX + "proxy-send-timeout": timeout,
        # Stream uploads to the server instead of spooling whole models to the controller's disk.
        NGINX + "proxy-request-buffering": "off",
    }


def _backend(service: str) -> dict[str, Any]:
    return {"service": {"name": service, "port": {"name": HTTP_PORT_NAME}}}


def routes(ts: TrackingServer) -> list[tuple[str, str]]:
    """(path prefix, Service) pairs, most specific first. In Split mode MLflow's artifact proxy API
    goes straight to the artifacts pods; everything else (UI, tracking API) to the metadata pods."""
    result = []
    if ts.spec.artifacts.mode == "Split":
        result += [(path, naming.artifacts_name(ts)) for path in ARTIFACT_PROXY_PATHS]
    result.append(("/", naming.tracking_name(ts)))
    return result


def ingress(ts: TrackingServer) -> dict[str, Any]:
    spec = ts.spec.ingress
    annotations = {**nginx_annotations(ts), **(spec.annotations or {})}
    paths = [{"path": path, "pathType": "Prefix", "backend": _backend(svc)} for path, svc in routes(ts)]
    body: dict[str, Any] = {}
    if spec.class_name:
        body["ingressClassName"] = spec.class_name
    if spec.tls_secret_name:
        body["tls"] = [{"hosts": list(spec.hosts), "secretName": spec.tls_secret_name}]
    body["rules"] = [{"host": host, "http": {"paths": paths}} for host in spec.hosts]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": naming.object_meta(ts, naming.tracking_name(ts), naming.TRACKING, annotations=annotations),
        "spec": body,
    }
