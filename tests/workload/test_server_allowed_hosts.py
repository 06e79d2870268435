"""The Host headers a served TrackingServer accepts, with the allowed-hosts list the operator renders.

`kubectl port-forward svc/<name> 8080:5000` makes the client send `Host: localhost:8080`; a
ClusterIP or pod IP arrives as itself. Each must get an answer, and a name nobody configured must
still get MLflow's 403 (its DNS-rebinding protection)."""
from __future__ import annotations

import socket
import threading

import pytest
import requests
import yaml
from mlflow_operator.render import render

from tests.operator_fixtures import EXAMPLES

from .server_env import O, proxied

pytestmark = pytest.mark.timeout(600)

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def rendered_server_env(example: str) -> dict[str, str]:
    """The literal env values of the example's server container, as the operator renders them."""
    manifests = render(yaml.safe_load((EXAMPLES / example).read_text()))
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in server["env"] if "value" in e}


class PortForward:
    """What `kubectl port-forward` is to the client: a listener on a random local port that copies
    bytes to the server, so the client's Host header names the forward's port, not the server's."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._copy, args=(a, b), daemon=True).start()

    @staticmethod
    def _copy(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def test_port_forward_cluster_and_pod_addresses_are_served_unknown_hosts_refused(mlflow_server, migrated_pg_uri, tmp_path):
    rendered = rendered_server_env("02-sqlite.yaml")
    # Addresses outside the private ranges, so only MLFLOW_OPERATOR_POD_IPS can let them in.
    pod_ips = "100.64.7.9,2001:db8:42::9"
    srv = mlflow_server(proxied(
        migrated_pg_uri, str(tmp_path / "artifacts"),
        **{O + "ALLOWED_HOSTS": rendered[O + "ALLOWED_HOSTS"], O + "POD_IPS": pod_ips},
    ))
    forward = PortForward(srv.port)
    try:
        through_forward = requests.get(f"http://localhost:{forward.port}{SEARCH}", timeout=30)
        assert forward.port != srv.port
        assert through_forward.status_code == 200, through_forward.text[:300]
        assert "experiments" in through_forward.json()
    finally:
        forward.close()

    def status(host: str) -> int:
        return requests.get(srv.url + SEARCH, headers={"Host": host}, timeout=30).status_code

    p = srv.port
    for host in (f"127.0.0.1:{p + 1}", f"[::1]:{p}", "10.96.0.15:5000", "192.168.49.2:5000", "[fd00:10:96::a]:5000",
                 "quickstart.ml-sandbox.svc.cluster.local:5000", "quickstart:5000",
                 f"100.64.7.9:{p}", f"[2001:db8:42::9]:{p}", "[2001:db8:42::9]"):
        assert status(host) == 200, host
    for host in ("evil.example", f"evil.example:{p}", "100.64.7.10:5000", f"2001:db8:42::9:{p}",
                 "quickstart.ml-sandbox.svc.evil:5000", "localhost.evil.example"):
        assert status(host) == 403, host
