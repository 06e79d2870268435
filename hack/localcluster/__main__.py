"""hack/cluster: the local control plane from the command line (standard library only).

    hack/cluster up       build if needed, start a cluster that outlives this command, print
                          `export KUBECONFIG=...` on stdout (so `eval "$(hack/cluster up)"` works)
    hack/cluster up --node   the same with a real node (containerd, kubelet, kube-proxy,
                          CoreDNS, local-path-provisioner) instead of kwok's fake one; root only
    hack/cluster status   is it running? components, pids, /readyz (exit 0 when ready, 3 if not)
    hack/cluster down     stop every process `up` started, remove its temp dir
    hack/cluster build    only build/refresh the cached binaries and CRDs; print where they are
                          (--node: the node's too: CoreDNS, the provisioner, their images)
    hack/cluster ingress [--port N]   Traefik (IngressClass nginx, Gateway traefik/mlflow) on the
                          node of the cluster `up --node` started, reached at 127.0.0.1:<port>
                          (printed on stdout; `down` stops it too). Only when already built
                          (`hack/cluster build --node`): exit 3 and say so otherwise

The state of the cluster `up` started (pids, temp dir) is kept in
${XDG_CACHE_HOME:-~/.cache}/mlflow-operator/cluster/state.json; a stable copy of its admin
kubeconfig is ${XDG_CACHE_HOME:-~/.cache}/mlflow-operator/cluster/kubeconfig. Set
LOCALCLUSTER_STATE_DIR to keep a separate cluster (and state) elsewhere: `down` only ever stops
the cluster recorded in its state dir.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from . import build, versions
from .cluster import Cluster, ClusterError, _Api


def state_dir() -> Path:
    """Where `up` records its cluster; LOCALCLUSTER_STATE_DIR gives a second, independent one."""
    override = os.environ.get("LOCALCLUSTER_STATE_DIR")
    return Path(override) if override else build.cache_root() / "cluster"


def state_file() -> Path:
    return state_dir() / "state.json"


def stable_kubeconfig() -> Path:
    return state_dir() / "kubeconfig"


def _err(msg: str) -> None:
    print(f"[localcluster] {msg}", file=sys.stderr, flush=True)


def _load() -> Cluster | None:
    try:
        return Cluster.from_state(json.loads(state_file().read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError) as exc:
        _err(f"ignoring unreadable state file {state_file()}: {exc}")
        return None


def _ready(c: Cluster) -> tuple[bool, str]:
    try:
        api = _Api(c.server, c.ca.cert, c.admin_cert)
    except (OSError, AttributeError) as exc:
        return False, f"no credentials: {exc}"
    status, body = api.request("GET", "/readyz", timeout=3)
    return status == 200, (body.strip() or f"HTTP {status}")[:200]


def _teardown(c: Cluster) -> list[str]:
    killed = c._teardown()
    if c.workdir:
        shutil.rmtree(c.workdir, ignore_errors=True)
    state_file().unlink(missing_ok=True)
    stable_kubeconfig().unlink(missing_ok=True)
    return killed


def cmd_up(args: argparse.Namespace) -> int:
    old = _load()
    if old is not None:
        alive = old.alive()
        if all(alive.values()) and _ready(old)[0]:
            _err(f"already running ({old.server}); `{down_command()}` stops it")
            print_exports(old.bin_dir)
            return 0
        _err("cleaning up a previous cluster that is no longer healthy")
        _teardown(old)
    t0 = time.monotonic()
    try:
        from .cluster import start

        count = args.nodes if args.nodes is not None else (0 if args.node else 1)
        nodes = tuple(f"kwok-node-{i}" for i in range(count))
        cluster = start(fake_nodes=nodes, node=args.node, timeout=args.timeout, detached=True)
    except ClusterError as exc:
        _err(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        _err("interrupted; everything started was stopped")
        return 130
    state_dir().mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cluster.kubeconfig, stable_kubeconfig())
    stable_kubeconfig().chmod(0o600)
    state = cluster.to_state()
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(state_file())
    _err(f"up in {time.monotonic() - t0:.1f}s; logs in {cluster.log_dir}; stop with `{down_command()}`")
    _err(f"kubectl and helm (Kubernetes {versions.KUBERNETES}): {cluster.bin_dir}")
    if cluster.node is not None:
        _err(f"real node {cluster.node.name} ({cluster.node.ip}): pods run in containerd; its socket "
             f"{cluster.node.containerd_socket} (load images: ctr -n k8s.io -a <socket> images import <oci-archive>)")
    else:
        _err("the nodes are kwok's fakes: pods are reported Running and Ready but no container runs, so a "
             "TrackingServer turns Ready without anything serving it (port-forward and the UI get nothing; "
             "`hack/cluster up --node` runs a real node)")
    print_exports(cluster.bin_dir)
    return 0


def down_command() -> str:
    """What stops this cluster, and only this one: a second cluster has its own state dir."""
    override = os.environ.get("LOCALCLUSTER_STATE_DIR")
    return f"LOCALCLUSTER_STATE_DIR={override} hack/cluster down" if override else "hack/cluster down"


def print_exports(bin_dir: Path | None) -> None:
    """stdout, for `eval "$(hack/cluster up)"`: the kubeconfig, and the cached kubectl and helm
    ahead of any older kubectl on PATH."""
    print(f"export KUBECONFIG={stable_kubeconfig()}")
    if bin_dir:
        print(f'export PATH="{bin_dir}:$PATH"')


def cmd_status(args: argparse.Namespace) -> int:
    c = _load()
    if c is None:
        print("no cluster started by `hack/cluster up`")
        return 3
    ready, detail = _ready(c)
    print(f"server:     {c.server}")
    print(f"kubeconfig: {stable_kubeconfig()}")
    print(f"workdir:    {c.workdir}")
    procs = list(c.processes)
    if c.node is not None:
        procs += ([c.node.holder] if c.node.holder else []) + c.node.processes
        print(f"node:       {c.node.name} ({c.node.ip}), containerd {c.node.containerd_socket}")
    for p in procs:
        print(f"  {p.name:<24} pid {p.pid:<8} {'running' if p.alive() else 'NOT RUNNING'}")
    print(f"readyz:     {'ok' if ready else 'NOT READY: ' + detail}")
    return 0 if ready and all(c.alive().values()) else 3


def cmd_ingress(args: argparse.Namespace) -> int:
    c = _load()
    if c is None or c.node is None:
        _err("no cluster with a real node started by `hack/cluster up --node`")
        return 3
    from . import ingress_controller

    port_file = Path(c.workdir) / "ingress-forward.port"
    running = [p for p in c.processes if p.name == "ingress-forward" and p.alive()]
    if running and port_file.is_file():
        print(port_file.read_text().strip())
        return 0
    missing = ingress_controller.missing()
    if missing:
        # A cold build is about 1,700 Go packages (25-60 min here): never started behind a demo.
        _err(f"Traefik is not built ({', '.join(missing)}); `hack/cluster build --node` builds it")
        return 3
    try:
        ingress = ingress_controller.install(c, log=_err, port=args.port)
    except build.BuildError as exc:
        _err(f"FAILED: {exc}")
        return 1
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(c.to_state(), indent=2) + "\n")
    tmp.replace(state_file())
    print(ingress.port)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    c = _load()
    if c is None:
        print("no cluster started by `hack/cluster up`; nothing to stop")
        return 0
    try:
        killed = _teardown(c)
    except ClusterError as exc:
        _err(str(exc))
        return 1
    note = f" (SIGKILL needed for {', '.join(killed)})" if killed else ""
    print(f"stopped {len(c.processes)} processes{note}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    todo = build.missing()
    try:
        path = build.ensure()
        if args.node:
            from . import node, node_build

            missing = node.requirements()
            if missing:
                # Not fatal: the node's tests fail with this reason; the rest can run.
                _err("NOTE: not building the node's components; this machine lacks: " + "; ".join(missing))
            else:
                todo += node_build.missing()
                node_build.ensure()
                # Traefik (tests/node's ingress controller): about 1,700 Go packages cold, built
                # here so the first ingress test's timeout never includes the build.
                from . import ingress_controller

                todo += ingress_controller.missing()
                try:
                    ingress_controller.ensure()
                except build.BuildError as exc:  # only the ingress tests need it: they fail with this
                    _err(f"NOTE: Traefik did not build: {exc}")
    except build.BuildError as exc:
        _err(f"FAILED: {exc}")
        return 1
    if not todo:
        _err(f"cache warm, nothing to build ({time.monotonic() - t0:.1f}s)")
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/cluster",
        description=f"Local Kubernetes {versions.KUBERNETES} control plane on 127.0.0.1 (etcd, kube-apiserver, "
        "controller-manager, scheduler, kwok), built from source.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build if needed, start, print `export KUBECONFIG=...`")
    up.add_argument("--nodes", type=int, default=None, help="number of fake (kwok) nodes (default 1; 0 with --node)")
    up.add_argument("--node", action="store_true", help="a real node: containerd, kubelet, kube-proxy, CoreDNS, "
                    "local-path-provisioner in a network namespace of the cluster's own (root only)")
    up.add_argument("--timeout", type=float, default=None, help="seconds to wait for readiness (default 90; 240 with --node)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the cluster `up` started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="is it running and ready?").set_defaults(func=cmd_status)
    b = sub.add_parser("build", help="build/refresh the cached binaries and CRDs only")
    b.add_argument("--node", action="store_true", help="also the real node's components (CoreDNS, provisioner, Traefik, images)")
    b.set_defaults(func=cmd_build)
    i = sub.add_parser("ingress", help="Traefik on the real node, reached from 127.0.0.1 (prints the port)")
    i.add_argument("--port", type=int, default=0, help="loopback port of its entry point (default: a free one)")
    i.set_defaults(func=cmd_ingress)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
