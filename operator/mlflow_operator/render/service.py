"""Services and the ServiceAccount."""
from __future__ import annotations

from typing import Any

from ..api import TrackingServer
from ..constants import HTTP_PORT, HTTP_PORT_NAME, METRICS_PORT, METRICS_PORT_NAME
from . import naming


def _ports(ts: TrackingServer) -> list[dict[str, Any]]:
    """The API port, and with metrics on the metrics port: under its own name, which the
    ServiceMonitor scrapes and the Ingress/HTTPRoute (routing to `http` / 5000) never route."""
    ports = [{"name": HTTP_PORT_NAME, "port": HTTP_PORT, "targetPort": HTTP_PORT_NAME, "protocol": "TCP",
              "appProtocol": "http"}]
    if ts.spec.metrics.enabled:
        ports.append({"name": METRICS_PORT_NAME, "port": METRICS_PORT, "targetPort": METRICS_PORT_NAME,
                      "protocol": "TCP", "appProtocol": "http"})
    return ports


def _service(ts: TrackingServer, name: str, component: str, service_type: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": naming.object_meta(ts, name, component, annotations=ts.spec.service.annotations),
        "spec": {
            "type": service_type,
            "selector": naming.selector_labels(ts, component),
            "ports": _ports(ts),
        },
    }


def tracking_service(ts: TrackingServer) -> dict[str, Any]:
    """The client-facing Service: MLFLOW_TRACKING_URI=http://<name>.<namespace>.svc:5000."""
    return _service(ts, naming.tracking_name(ts), naming.TRACKING, ts.spec.service.type)


def artifacts_service(ts: TrackingServer) -> dict[str, Any]:
    """Split mode: reached by the metadata pods and by the Ingress/HTTPRoute's artifact routes."""
    return _service(ts, naming.artifacts_name(ts), naming.ARTIFACTS, "ClusterIP")


def service_account(ts: TrackingServer) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": naming.object_meta(
            ts, naming.tracking_name(ts), naming.TRACKING, annotations=ts.spec.service_account.annotations
        ),
        "automountServiceAccountToken": False,
    }
