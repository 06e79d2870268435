"""``python -m mlflow_entrypoint.launch <uvicorn arguments>``: uvicorn's own command line, with the
Prometheus listener beside it.

``serve`` runs MLflow's uvicorn command through this module (``asgi.uvicorn_command``). When metrics
are on, the process that becomes uvicorn's supervisor first starts a small HTTP server on the
metrics port (``MLFLOW_OPERATOR_METRICS_PORT``, 9090 in the operator's pods) that exposes MLflow's
prometheus multiprocess directory: every worker writes its samples there and the listener sums
them, so one scrape covers all workers, in the process that serves no requests. It has no
authentication: the operator's Service exposes it under its own port name for the ServiceMonitor,
the Ingress and HTTPRoute never route to it, and the NetworkPolicy admits only the listed peers.
The API port answers 404 for ``/metrics`` (``guard.HiddenPaths``).
"""
from __future__ import annotations

import json
import os
import sys

# set by serve for this process only: {"host": ..., "port": ..., "directory": ...}
METRICS_ENV = "_MLFLOW_ENTRYPOINT_METRICS"


def start_metrics_listener(host: str, port: int, directory: str):
    """Serves the multiprocess directory's metrics on host:port from a daemon thread."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return start_http_server(port, addr=host, registry=registry)


def main() -> None:
    raw = os.environ.pop(METRICS_ENV, None)  # the workers have nothing to do with it
    if raw:
        metrics = json.loads(raw)
        start_metrics_listener(metrics["host"], int(metrics["port"]), metrics["directory"])
        print(f"mlflow-entrypoint: Prometheus metrics on {metrics['host']}:{metrics['port']}/metrics",
              file=sys.stderr, flush=True)
    from uvicorn.main import main as uvicorn_main

    uvicorn_main(prog_name="uvicorn")


if __name__ == "__main__":
    main()
