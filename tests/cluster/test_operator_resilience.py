"""The operator when it is not there, and when the API server stops answering."""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import yaml

from tests.operator_fixtures import (
    get_json,
    operator_stopped,
    start_operator,
    stop_operator,
    wait_for,
    wait_for_conditions,
)

LEGACY_FINALIZER = "mlflow-operator.dev/finalizer"


def quickstart(namespace: str, name: str, **metadata) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
            "metadata": {"name": name, "namespace": namespace, **metadata}, "spec": {}}


def apply(cluster, obj: dict) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def namespace_gone(cluster, namespace: str) -> bool:
    return cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0


def test_namespace_deletion_never_waits_for_the_operator(cluster, operator, namespace):
    """With the operator stopped (uninstalled, crash-looping), `kubectl delete namespace` completes:
    TrackingServers carry no finalizer. A TrackingServer with the finalizer of earlier versions has
    it taken off when the operator next sees it."""
    apply(cluster, quickstart(namespace, "team"))
    wait_for_conditions(cluster, namespace, "team", timeout=120, op=operator, Ready="True")
    assert not get_json(cluster, "trackingserver", "team", "-n", namespace)["metadata"].get("finalizers")

    legacy_ns = namespace[:55] + "-legacy"
    cluster.kubectl("create", "namespace", legacy_ns)
    try:
        with operator_stopped(operator):
            cluster.kubectl("delete", "namespace", namespace, "--wait=false")
            wait_for(f"namespace {namespace} to be deleted with the operator stopped",
                     lambda: namespace_gone(cluster, namespace), timeout=90, interval=1,
                     explain=lambda: cluster.kubectl("get", "trackingservers,all", "-n", namespace, "-o", "wide",
                                                     check=False).stdout)
            apply(cluster, quickstart(legacy_ns, "old", finalizers=[LEGACY_FINALIZER]))
        wait_for("the operator to take the legacy finalizer off",
                 lambda: not get_json(cluster, "trackingserver", "old", "-n", legacy_ns)["metadata"].get("finalizers"),
                 timeout=60, explain=lambda: operator.logs(20))
        wait_for_conditions(cluster, legacy_ns, "old", timeout=120, op=operator, Ready="True")
    finally:
        cluster.kubectl("delete", "namespace", legacy_ns, "--wait=false", "--ignore-not-found", check=False)


class StallingProxy:
    """A TCP proxy to the API server that can stop answering: `stall()` freezes every open
    connection for good (bytes are neither forwarded nor refused, as with a peer that vanished
    without a FIN) and every connection opened until `resume()`."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stalled = False
        self.closed = threading.Event()
        self.connections: list[dict] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            conn = {"frozen": self.stalled, "sockets": [client]}
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            conn["sockets"].append(upstream)
            with self.lock:
                self.connections.append(conn)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(conn, src, dst), daemon=True).start()

    def _pump(self, conn: dict, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.2)
        while not self.closed.is_set():
            if conn["frozen"]:
                time.sleep(0.2)  # holds the connection open, answers nothing
                continue
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        if not conn["frozen"]:
            for s in conn["sockets"]:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stall(self) -> None:
        with self.lock:
            self.stalled = True
            for conn in self.connections:
                conn["frozen"] = True

    def resume(self) -> None:
        self.stalled = False  # the frozen connections stay frozen: their peer is "gone"

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        with self.lock:
            for conn in self.connections:
                for s in conn["sockets"]:
                    s.close()


def kubeconfig_through(proxy: StallingProxy, kubeconfig: Path, path: Path) -> Path:
    config = yaml.safe_load(kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    path.write_text(yaml.safe_dump(config))
    return path


def test_an_api_server_that_stops_answering_holds_no_reconcile_forever(cluster, operator, namespace, tmp_path):
    """Every API request has a timeout and every pass a deadline, Kopf's watches too: after the API
    server stopped answering mid-pass (connections left half-open for good), the operator
    reconciles again as soon as it answers, on new connections."""
    from urllib.parse import urlsplit

    server = urlsplit(cluster.server)
    proxy = StallingProxy((server.hostname, server.port))
    with operator_stopped(operator):
        op = start_operator(cluster, tmp_path, ("--request-timeout", "5", "--pass-deadline", "15", "--watch-timeout", "15"))
        try:
            op.kubeconfig = kubeconfig_through(proxy, op.kubeconfig, tmp_path / "through-proxy.kubeconfig")
            stop_operator(op)
            op.env["KUBECONFIG"] = str(op.kubeconfig)
            from tests.operator_fixtures import launch_operator

            launch_operator(op)
            apply(cluster, quickstart(namespace, "before"))
            wait_for_conditions(cluster, namespace, "before", timeout=120, op=op, Ready="True")

            proxy.stall()
            # Passes of "before" (every 5 s) and the new server's first ones meet the frozen connections.
            apply(cluster, quickstart(namespace, "during"))
            time.sleep(15)
            proxy.resume()
            apply(cluster, quickstart(namespace, "after"))
            for name in ("during", "after"):
                wait_for_conditions(cluster, namespace, name, timeout=120, op=op, Ready="True")
            op.assert_alive()
        finally:
            stop_operator(op)
            proxy.close()
