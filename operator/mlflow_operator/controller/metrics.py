"""The operator's own Prometheus metrics: reconciles, errors, durations, and what it manages."""
from __future__ import annotations

import time
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "mlflow_operator_reconciles_total", "Reconcile passes of a TrackingServer, by result", ["namespace", "name", "result"]
)
RECONCILE_SECONDS = Histogram(
    "mlflow_operator_reconcile_duration_seconds",
    "Duration of one reconcile pass",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
APPLIED_OBJECTS = Counter("mlflow_operator_applied_objects_total", "Objects server-side applied", ["kind"])
MIGRATIONS = Counter("mlflow_operator_migration_jobs_total", "Migration Jobs created, and how they ended", ["result"])
READY = Gauge("mlflow_operator_trackingserver_ready", "1 when a TrackingServer is Ready", ["namespace", "name"])


def forget(namespace: str, name: str) -> None:
    """A TrackingServer that is gone (or no longer served by this operator) leaves no series behind."""
    for result in ("success", "error"):
        try:
            RECONCILES.remove(namespace, name, result)
        except KeyError:
            pass
    try:
        READY.remove(namespace, name)
    except KeyError:
        pass


@contextmanager
def timed_reconcile(namespace: str, name: str):
    start = time.monotonic()
    try:
        yield
    except Exception:
        RECONCILES.labels(namespace, name, "error").inc()
        raise
    else:
        RECONCILES.labels(namespace, name, "success").inc()
    finally:
        RECONCILE_SECONDS.observe(time.monotonic() - start)


def serve(port: int, address: str = "0.0.0.0") -> None:
    start_http_server(port, addr=address)
