"""Host services (PostgreSQL, MinIO on 127.0.0.1) made reachable from the real node's pods.

A pod reaches `<name>.<namespace>.svc:<port>` as it would a database Service on a user's cluster:
a selector-less Service and an EndpointSlice name the node's address, where a relay listens
inside the node's network namespace and forwards each connection to the service on the host's
loopback. Nothing listens outside the namespace or loopback.
"""
from __future__ import annotations

import json
import socket
import threading

from localcluster.netns import call_in


def _pump(src: socket.socket, dst: socket.socket) -> None:
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


class ServiceForPods:
    def __init__(self, cluster, namespace: str, name: str, host_port: int, port: int):
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.host_port = host_port
        self.port = port
        self._listener: socket.socket | None = None
        self._closed = False

    @property
    def host(self) -> str:
        return f"{self.name}.{self.namespace}.svc"

    def start(self) -> "ServiceForPods":
        node = self.cluster.node

        def listen() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((node.ip, 0))
            s.listen(64)
            return s

        self._listener = call_in(node.netns_path, listen)
        relay_port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name=f"relay-{self.name}", daemon=True).start()
        service = {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"ports": [{"name": "tcp", "port": self.port, "targetPort": relay_port, "protocol": "TCP"}]},
        }
        endpoints = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{self.name}-host", "namespace": self.namespace,
                         "labels": {"kubernetes.io/service-name": self.name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [node.ip], "conditions": {"ready": True}}],
            "ports": [{"name": "tcp", "port": relay_port, "protocol": "TCP"}],
        }
        for obj in (service, endpoints):
            self.cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed:
            try:
                inside, _ = self._listener.accept()
            except OSError:
                return
            try:
                outside = socket.create_connection(("127.0.0.1", self.host_port), timeout=10)
                outside.settimeout(None)
            except OSError:
                inside.close()
                continue
            for a, b in ((inside, outside), (outside, inside)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def stop(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.close()
