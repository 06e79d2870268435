"""The Gateway API HTTPRoute (gateway.networking.k8s.io/v1)."""
from __future__ import annotations

from typing import Any

from ..api import TrackingServer
from ..constants import HTTP_PORT
from . import naming
from .ingress import routes


def http_route(ts: TrackingServer) -> dict[str, Any]:
    spec = ts.spec.gateway
    timeouts = {"request": f"{ts.spec.http.timeout_seconds}s"}
    by_service: dict[str, list[str]] = {}
    for path, service in routes(ts):
        by_service.setdefault(service, []).append(path)
    rules = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": path}} for path in paths],
            "backendRefs": [{"name": service, "port": HTTP_PORT}],
            "timeouts": timeouts,
        }
        for service, paths in by_service.items()
    ]
    body: dict[str, Any] = {"parentRefs": [ref.dump() for ref in spec.parent_refs]}
    if spec.hostnames:
        body["hostnames"] = list(spec.hostnames)
    body["rules"] = rules
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": naming.object_meta(ts, naming.tracking_name(ts), naming.TRACKING),
        "spec": body,
    }
