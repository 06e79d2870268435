"""`mlflow-operator run`: the operator process."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..constants import DEFAULT_CLUSTER_DOMAIN, DEFAULT_IMAGE, MLFLOW_VERSION

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


def default_image(reference: str) -> str:
    """A full image reference, or a repository (a mirror's) that gets the pinned MLflow version."""
    reference = reference.strip()
    last = reference.rsplit("/", 1)[-1]
    if not reference or "@" in reference or ":" in last:
        return reference or DEFAULT_IMAGE
    return f"{reference}:{MLFLOW_VERSION}"


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
    # Off 8080/8081, which local tools, dev servers and other operators commonly take.
    parser.add_argument("--health-port", type=int, default=8470, help="serves /healthz (0: off)")
    parser.add_argument("--metrics-port", type=int, default=8471, help="serves Prometheus /metrics (0: off)")
    parser.add_argument("--bind-address", default=os.environ.get("MLFLOW_OPERATOR_BIND_ADDRESS", "0.0.0.0"),
                        help="address of the health and metrics endpoints")
    parser.add_argument("--default-image", type=default_image,
                        default=os.environ.get("MLFLOW_OPERATOR_DEFAULT_IMAGE", DEFAULT_IMAGE),
                        help="server image of a TrackingServer without spec.image, e.g. a mirror's copy; a "
                        f"repository without tag gets :{MLFLOW_VERSION} (default: {DEFAULT_IMAGE})")
    parser.add_argument("--cluster-domain", default=os.environ.get("MLFLOW_OPERATOR_CLUSTER_DOMAIN") or None,
                        help="the cluster's DNS domain (default: read from /etc/resolv.conf's svc.<domain> "
                        f"search entry, else {DEFAULT_CLUSTER_DOMAIN})")
    # A pass waits on the API server most of its time (bench-operator, N=250: with 8 workers the
    # edit of every server took 124 s to reach the Deployments, with 32 it took 42 s; the same CPU).
    parser.add_argument("--workers", type=int, default=32, help="reconcile passes that may run at once")
    api = parser.add_argument_group("API requests")
    api.add_argument("--request-timeout", type=float, default=30.0,
                     help="seconds an API request may wait for an answer (connect: a third of it, at most 10)")
    api.add_argument("--pass-deadline", type=float, default=120.0,
                     help="seconds one reconcile pass may spend on API requests before it gives up and retries")
    api.add_argument("--watch-timeout", type=float, default=300.0,
                     help="a watch is re-opened after this long, and sooner when it goes silent for this long")
    api.add_argument("--api-qps", type=float, default=50.0, help="client-side rate limit of reconcile requests (0: none)")
    api.add_argument("--api-burst", type=int, default=100, help="requests allowed at once above --api-qps")
    parser.add_argument("--log-format", choices=["json", "plain", "full"], default="json")
    parser.add_argument("--log-level", choices=["debug", "info", "warning"], default="info")


class _QuietEventHandlers(logging.Filter):
    """Our watch-event handlers only wake a reconcile loop; a log line per event would drown the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (record.levelno <= logging.INFO and message.startswith("Handler '") and message.endswith("succeeded."))


class _Once(logging.Filter):
    """Kopf repeats "Unresolved resources cannot be served ... httproutes" at every rescan of the
    cluster's resources (any CRD change): an optional API that is absent is said once."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix, self.seen = prefix, set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.prefix):
            return True
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def logging_options(log_format: str, log_level: str) -> dict:
    """kopf.configure's arguments. Text lines start with [namespace/name] (Kopf leaves that off by
    default); JSON lines carry them as the "object" key."""
    import kopf

    formats = {"json": kopf.LogFormat.JSON, "plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL}
    return {"debug": log_level == "debug", "quiet": log_level == "warning", "log_format": formats[log_format],
            "log_prefix": log_format != "json", "log_refkey": "object"}


def quiet_repetitions() -> None:
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").addFilter(_QuietEventHandlers())
    logging.getLogger("kopf._core.reactor.observation").addFilter(_Once("Unresolved resources cannot be served"))


# Client packages the operator's process never imports: it has its own client (kube.py,
# credentials.py), and Kopf imports these, when installed, only for integrations the operator does
# not use (11 MB of the process, measured). The image has none of them; beside the tests (whose own
# admin client is `kubernetes`) they would make the process the tests measure differ from it.
UNUSED_CLIENT_PACKAGES = ("kubernetes", "kubernetes_asyncio", "pykube")


def block_unused_client_packages() -> None:
    for package in UNUSED_CLIENT_PACKAGES:
        sys.modules.setdefault(package, None)  # `import` of it raises ImportError (Kopf expects that)


def run(args: argparse.Namespace) -> int:
    block_unused_client_packages()
    import kopf

    from ..render import RenderContext
    from . import kube, metrics

    kopf.configure(**logging_options(args.log_format, args.log_level))
    from . import handlers  # registers the handlers
    from . import watch_streams
    watch_streams.install(compacted=handlers.is_cached_child)
    quiet_repetitions()

    kube.settings = kube.Settings(
        connect_timeout=min(10.0, args.request_timeout / 3), read_timeout=args.request_timeout,
        pass_deadline=args.pass_deadline, qps=args.api_qps, burst=args.api_burst,
        connections=args.workers,
    )

    if args.metrics_port:
        metrics.serve(args.metrics_port, args.bind_address)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.standalone or args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=f"http://{args.bind_address}:{args.health_port}/healthz" if args.health_port else None,
        memo=kopf.Memo(resync=args.resync_seconds, workers=args.workers, request_timeout=args.request_timeout,
                       watch_timeout=args.watch_timeout, render_base=RenderContext(
            default_image=args.default_image, cluster_domain=cluster_domain(args.cluster_domain))),
    )
    return 0
