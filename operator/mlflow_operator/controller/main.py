"""`mlflow-operator run`: the operator process."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ..constants import DEFAULT_CLUSTER_DOMAIN, DEFAULT_IMAGE

RESOLV_CONF = Path("/etc/resolv.conf")


def cluster_domain_from_resolv_conf(text: str) -> str | None:
    """The kubelet writes a pod's search path as `<ns>.svc.<domain> svc.<domain> <domain>`."""
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] == ["search"]:
            for entry in fields[1:]:
                if entry.startswith("svc.") and len(entry) > 4:
                    return entry[4:].rstrip(".")
    return None


def cluster_domain(flag: str | None, resolv_conf: Path = RESOLV_CONF) -> str:
    if flag:
        return flag.strip(".")
    try:
        return cluster_domain_from_resolv_conf(resolv_conf.read_text()) or DEFAULT_CLUSTER_DOMAIN
    except OSError:
        return DEFAULT_CLUSTER_DOMAIN


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
    parser.add_argument("--default-image", default=os.environ.get("MLFLOW_OPERATOR_DEFAULT_IMAGE", DEFAULT_IMAGE),
                        help="server image of a TrackingServer without spec.image, e.g. a mirror's copy "
                        f"(default: {DEFAULT_IMAGE})")
    parser.add_argument("--cluster-domain", default=os.environ.get("MLFLOW_OPERATOR_CLUSTER_DOMAIN") or None,
                        help="the cluster's DNS domain (default: read from /etc/resolv.conf's svc.<domain> "
                        f"search entry, else {DEFAULT_CLUSTER_DOMAIN})")
    parser.add_argument("--log-format", choices=["json", "plain", "full"], default="json")
    parser.add_argument("--log-level", choices=["debug", "info", "warning"], default="info")


class _QuietEventHandlers(logging.Filter):
    """Our watch-event handlers only wake a reconcile loop; a log line per event would drown the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (record.levelno <= logging.INFO and message.startswith("Handler '") and message.endswith("succeeded."))


def run(args: argparse.Namespace) -> int:
    import kopf

    from ..render import RenderContext
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
        memo=kopf.Memo(resync=args.resync_seconds, render_base=RenderContext(
            default_image=args.default_image, cluster_domain=cluster_domain(args.cluster_domain))),
    )
    return 0
