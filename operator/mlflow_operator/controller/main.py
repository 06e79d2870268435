"""`mlflow-operator run`: the operator process."""
from __future__ import annotations

import argparse
import logging
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (default)")
    scope.add_argument("--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)")
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--peering", default=None, help="Kopf peering name: a second operator with it pauses")
    peering.add_argument("--standalone", action="store_true", help="no peering (a single operator instance)")
    parser.add_argument("--priority", type=int, default=0, help="Kopf peering priority")
    parser.add_argument("--resync-seconds", type=float, default=60.0, help="re-check every TrackingServer this often")
    parser.add_argument("--health-port", type=int, default=8080, help="serves /healthz (0: off)")
    parser.add_argument("--metrics-port", type=int, default=8081, help="serves Prometheus /metrics (0: off)")
    parser.add_argument("--bind-address", default=os.environ.get("MLFLOW_OPERATOR_BIND_ADDRESS", "0.0.0.0"),
                        help="address of the health and metrics endpoints")
    parser.add_argument("--log-format", choices=["json", "plain", "full"], default="json")
    parser.add_argument("--log-level", choices=["debug", "info", "warning"], default="info")


class _QuietEventHandlers(logging.Filter):
    """Our watch-event handlers only wake a reconcile loop; a log line per event would drown the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (record.levelno <= logging.INFO and message.startswith("Handler '") and message.endswith("succeeded."))


def run(args: argparse.Namespace) -> int:
    import kopf

    from . import metrics

    kopf.configure(
        debug=args.log_level == "debug",
        quiet=args.log_level == "warning",
        log_format={"json": kopf.LogFormat.JSON, "plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL}[args.log_format],
        log_refkey="object",
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").addFilter(_QuietEventHandlers())
    from . import handlers  # noqa: F401 - registers the handlers

    if args.metrics_port:
        metrics.serve(args.metrics_port, args.bind_address)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.standalone or args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=f"http://{args.bind_address}:{args.health_port}/healthz" if args.health_port else None,
        memo=kopf.Memo(resync=args.resync_seconds),
    )
    return 0
