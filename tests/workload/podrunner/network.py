"""The cluster network on loopback: pod IPs, Services (a kube-proxy stand-in) and their DNS names.

Addresses. The API server refuses loopback addresses in EndpointSlices ("may not be in the loopback
range"), so pods cannot be published as 127.x. Instead the runner's pod IPs come from 10.200.<slot>.0/24
(POD_NETWORK is 10.200.0.0/16) and each has a loopback image: 10.a.b.c is served on 127.a.b.c (all of
127.0.0.0/8 is loopback on Linux). status.podIP is the 10.200.x.y address, so the real endpointslice
controller publishes it; the pod's processes listen on its image 127.200.x.y. Service ClusterIPs
(10.96.x.y, allocated by the API server) are served on 127.(96+slot).x.y. The slot (slots.py) keeps
test sessions that run at the same time on one machine apart.

Pod network namespace. A process of a pod that listens on "all interfaces" would listen on the pod's
IP in a real cluster; here there is no network namespace per pod (the host's network is not touched),
so the runner maps the image's listen-address setting 0.0.0.0 to the pod's loopback image (see
kubelet.py, LISTEN_ADDRESS_ENV).

Services (kube-proxy stand-in). For each Service port with at least one ready endpoint on a pod of the
runner, a TCP proxy listens on <ClusterIP image>:<port> and forwards each connection to one of the
ready endpoints (round robin), mapped to their loopback images. With no ready endpoint nothing
listens (connection refused, as kube-proxy's REJECT). Endpoints of other nodes (kwok's fake pods) are
not reachable and are left out.

DNS (cluster DNS stand-in). Each pod's /etc/hosts (the kubelet-managed hosts file) also lists every
Service as <svc>.<ns>.svc.cluster.local, <svc>.<ns>.svc, <svc>.<ns> (and <svc> in the pod's own
namespace, the search path) -> the ClusterIP's loopback image. The file is rewritten in place when
Services change. Headless Services and external names are not resolved.
"""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import threading
from pathlib import Path
from typing import Iterable

from .kube import Informer, Kube, Obj

log = logging.getLogger("podrunner")

POD_NETWORK = ipaddress.ip_network("10.200.0.0/16")
EMULATED = ipaddress.ip_network("10.0.0.0/8")


def pod_cidr(slot: int) -> ipaddress.IPv4Network:
    return ipaddress.ip_network(f"10.200.{slot}.0/24")


def loopback_of(ip: str) -> str | None:
    """10.a.b.c -> 127.a.b.c; a loopback address stays itself; anything else has no image here."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if addr.is_loopback:
        return ip
    if addr in EMULATED:
        return "127." + ip.split(".", 1)[1]
    return None


class IPAM:
    """Pod IPs from one CIDR, handed out in order (a freed address is reused last)."""

    def __init__(self, cidr: ipaddress.IPv4Network) -> None:
        self.cidr = cidr
        self.lock = threading.Lock()
        self.used: set[str] = set()
        self.hosts = itertools.cycle(str(h) for h in cidr.hosts() if not str(h).endswith((".0", ".255", ".1")))

    def allocate(self) -> str:
        with self.lock:
            for _ in range(self.cidr.num_addresses):
                ip = next(self.hosts)
                if ip not in self.used:
                    self.used.add(ip)
                    return ip
        raise RuntimeError("pod runner: no free pod IP")

    def release(self, ip: str | None) -> None:
        with self.lock:
            self.used.discard(ip)


class _Forwarder:
    """One listening socket: <ClusterIP image>:<port> -> ready endpoints."""

    def __init__(self, loop: asyncio.AbstractEventLoop, address: str, port: int, label: str):
        self.loop, self.address, self.port, self.label = loop, address, port, label
        self.backends: list[tuple[str, int]] = []
        self.rr = 0
        self.server: asyncio.base_events.Server | None = None
        self.connections = 0

    async def set_backends(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        if backends and self.server is None:
            self.server = await asyncio.start_server(self._handle, self.address, self.port, reuse_address=True)
        elif not backends and self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        backends = list(self.backends)
        if not backends:
            writer.close()
            return
        self.rr += 1
        host, port = backends[self.rr % len(backends)]
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            log.warning("service %s: endpoint %s:%d refused: %s", self.label, host, port, exc)
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while True:
                    chunk = await src.read(256 * 1024)
                    if not chunk:
                        break
                    dst.write(chunk)
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()
            except (ConnectionError, OSError):
                pass

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        for w in (writer, up_writer):
            w.close()

    async def close(self) -> None:
        await self.set_backends([])


def ready_endpoints(slices: Iterable[Obj], namespace: str, service: str, port_name: str,
                    cidr: ipaddress.IPv4Network) -> list[tuple[str, int]]:
    """The loopback images of a Service port's ready endpoints in the runner's pod network, as
    kube-proxy would pick them from the EndpointSlices (not ready or terminating: left out)."""
    backends = []
    for sl in slices:
        meta = sl["metadata"]
        if meta.get("namespace") != namespace or (meta.get("labels") or {}).get("kubernetes.io/service-name") != service:
            continue
        if sl.get("addressType") != "IPv4":
            continue
        number = next((p.get("port") for p in sl.get("ports") or [] if (p.get("name") or "") == port_name), None)
        if number is None:
            continue
        for ep in sl.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            if cond.get("ready") is False or cond.get("terminating"):
                continue
            for address in ep.get("addresses") or []:
                if ipaddress.ip_address(address) in cidr:
                    backends.append((loopback_of(address), int(number)))
    return sorted(set(backends))


class ServiceNetwork:
    """kube-proxy and cluster DNS stand-ins for the runner's pods (see the module docstring)."""

    def __init__(self, kube: Kube, slot: int = 0):
        self.kube, self.slot = kube, slot
        self.cidr = pod_cidr(slot)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="service-proxy", daemon=True)
        self.forwarders: dict[tuple[str, str], _Forwarder] = {}
        self.hosts_files: dict[str, tuple[Path, str, list[str]]] = {}
        self.lock = threading.Lock()
        self.dirty = threading.Event()
        self.services = Informer(kube, "/api/v1/services", self._changed, name="services")
        self.slices = Informer(kube, "/apis/discovery.k8s.io/v1/endpointslices", self._changed, name="endpointslices")
        self.stopped = threading.Event()
        self.syncer = threading.Thread(target=self._sync_loop, name="service-sync", daemon=True)
        self.errors: list[str] = []

    def start(self) -> "ServiceNetwork":
        self.thread.start()
        self.services.start()
        self.slices.start()
        self.syncer.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.services.stop()
        self.slices.stop()
        fut = asyncio.run_coroutine_threadsafe(self._close_all(), self.loop)
        try:
            fut.result(10)
        except Exception:  # noqa: BLE001 - stopping anyway
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _close_all(self) -> None:
        for fwd in self.forwarders.values():
            await fwd.close()

    def _changed(self, kind: str, obj: Obj) -> None:
        self.dirty.set()

    # ---- the Service view

    def ready_backends(self, namespace: str, service: str, port: Obj) -> list[tuple[str, int]]:
        return ready_endpoints(self.slices.items(), namespace, service, port.get("name") or "", self.cidr)

    def service_image(self, cluster_ip: str | None) -> str | None:
        """10.96.x.y -> 127.(96+slot).x.y; None for headless Services and addresses outside 10/8."""
        if not cluster_ip or cluster_ip == "None" or loopback_of(cluster_ip) is None:
            return None
        _, second, third, fourth = cluster_ip.split(".")
        return f"127.{int(second) + self.slot}.{third}.{fourth}"

    def service_entries(self) -> list[tuple[str, str, str]]:
        """(loopback image of the ClusterIP, namespace, name) of every Service with a ClusterIP."""
        out = []
        for svc in self.services.items():
            image = self.service_image((svc.get("spec") or {}).get("clusterIP"))
            if image:
                out.append((image, svc["metadata"]["namespace"], svc["metadata"]["name"]))
        return sorted(out)

    def hosts_text(self, namespace: str, own: list[str]) -> str:
        lines = ["# Kubernetes-managed hosts file (pod runner: kubelet and cluster DNS stand-in).",
                 "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", *own]
        for image, ns, name in self.service_entries():
            names = [f"{name}.{ns}.svc.cluster.local", f"{name}.{ns}.svc", f"{name}.{ns}"]
            if ns == namespace:
                names.append(name)
            lines.append(image + "\t" + " ".join(names))
        return "\n".join(lines) + "\n"

    def register_hosts_file(self, owner: str, path: Path, namespace: str, own: list[str]) -> None:
        with self.lock:
            self.hosts_files[owner] = (path, namespace, own)
        _write_in_place(path, self.hosts_text(namespace, own))

    def unregister_hosts_file(self, owner: str) -> None:
        with self.lock:
            self.hosts_files.pop(owner, None)

    def wait_synced(self, timeout: float = 30) -> bool:
        return self.services.synced.wait(timeout) and self.slices.synced.wait(timeout)

    # ---- keeping proxies and hosts files current

    def _sync_loop(self) -> None:
        while not self.stopped.is_set():
            self.dirty.wait(1.0)
            if self.stopped.is_set():
                return
            self.dirty.clear()
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - keep serving; the tests show the errors
                log.exception("service sync failed")
                self.errors.append(repr(exc))

    def sync(self) -> None:
        wanted: dict[tuple[str, str], tuple[str, int, list[tuple[str, int]]]] = {}
        for svc in self.services.items():
            spec, meta = svc.get("spec") or {}, svc["metadata"]
            image = self.service_image(spec.get("clusterIP"))
            if not image:
                continue
            for port in spec.get("ports") or []:
                if port.get("protocol", "TCP") != "TCP":
                    continue
                label = f"{meta['namespace']}/{meta['name']}:{port.get('name') or port['port']}"
                backends = self.ready_backends(meta["namespace"], meta["name"], port)
                wanted[(label, image)] = (image, int(port["port"]), backends)
        fut = asyncio.run_coroutine_threadsafe(self._apply(wanted), self.loop)
        fut.result(30)
        with self.lock:
            files = list(self.hosts_files.values())
        for path, namespace, own in files:
            _write_in_place(path, self.hosts_text(namespace, own))

    async def _apply(self, wanted) -> None:
        for key in [k for k in self.forwarders if k not in wanted]:
            await self.forwarders.pop(key).close()
        for key, (image, port, backends) in wanted.items():
            fwd = self.forwarders.get(key)
            if fwd is None:
                fwd = self.forwarders[key] = _Forwarder(self.loop, image, port, key[0])
            if fwd.backends != backends or (backends and fwd.server is None):
                try:
                    await fwd.set_backends(backends)
                except OSError as exc:
                    self.errors.append(f"service {key[0]}: cannot listen on {image}:{port}: {exc}")


def _write_in_place(path: Path, text: str) -> None:
    """Rewrite keeping the inode: the file is bind-mounted into running containers."""
    if path.exists() and path.read_text() == text:
        return
    with open(path, "r+" if path.exists() else "w") as fh:
        fh.seek(0)
        fh.write(text)
        fh.truncate()
