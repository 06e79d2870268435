"""The prometheus-operator ServiceMonitor."""
from __future__ import annotations

from typing import Any

from ..api import TrackingServer
from ..constants import METRICS_PATH, METRICS_PORT_NAME
from . import naming


def service_monitor(ts: TrackingServer) -> dict[str, Any]:
    monitor = ts.spec.metrics.service_monitor
    meta = naming.object_meta(ts, naming.tracking_name(ts), naming.TRACKING)
    meta["labels"] = {**(monitor.labels or {}), **meta["labels"]}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            # Both Services in Split mode: metadata and artifacts pods export their own metrics.
            "selector": {"matchLabels": naming.instance_labels(ts)},
            # the metrics port, not the API's: no basic-auth in the way, nothing exposed outside
            "endpoints": [{"port": METRICS_PORT_NAME, "path": METRICS_PATH, "interval": monitor.interval}],
        },
    }
