"""Clients outside the cluster that reach a TrackingServer through the node's ingress controller by host
name, as a user's laptop reaches an Ingress: plain HTTP for what the controller itself answers, and a
name-resolution shim for the stock mlflow client (like `curl --connect-to`: the Host header stays the
name in the URL, the connection goes to the controller's loopback forwarder).
"""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from dataclasses import dataclass, field

from tests.operator_fixtures import wait_for

# Names under .example.test (RFC 6761: never resolves anywhere) go to the controller.
DOMAIN = "example.test"

# Port 443 (https://) goes to the controller's websecure entry point, any other to its web one.
RESOLVE_TO_INGRESS = """
import socket as _socket
_getaddrinfo = _socket.getaddrinfo
_HOSTS = {hosts!r}
def _to_ingress(host, port, *args, **kwargs):
    if isinstance(host, str) and (host.endswith(".{domain}") or host in _HOSTS):
        return _getaddrinfo("127.0.0.1", {tls_port} if str(port) in ("443", "https") else {port}, *args, **kwargs)
    return _getaddrinfo(host, port, *args, **kwargs)
_socket.getaddrinfo = _to_ingress
"""


def client_script(ingress, script: str, hosts: tuple[str, ...] = ()) -> str:
    """`script` for Real.client, with *.example.test (and `hosts`, such as an example's own host
    name) resolved to the ingress controller."""
    import textwrap

    return RESOLVE_TO_INGRESS.format(domain=DOMAIN, port=ingress.port, tls_port=ingress.tls_port,
                                     hosts=tuple(hosts)) + textwrap.dedent(script)


@dataclass
class Answer:
    status: int | None
    headers: dict[str, str]
    body: bytes
    sent: int
    seconds: float
    error: str | None = None
    served_by: dict = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def __str__(self) -> str:
        return (f"status={self.status} sent={self.sent} after {self.seconds:.1f}s error={self.error} "
                f"content-type={self.content_type!r} body={self.body[:300]!r}")


def request(ingress, host: str, method: str, path: str, body: bytes | None = None, *, chunk: int = 1 << 16,
            pace: float = 0.0, headers: dict[str, str] | None = None, timeout: float = 120,
            tls: ssl.SSLContext | None = None) -> Answer:
    """One request to the controller with `Host: host`. The body is sent `chunk` bytes at a time,
    `pace` seconds apart (a slow upload). An error while sending (the controller answered early and
    closed) does not lose its answer. With `tls`, over HTTPS to the websecure entry point, `host`
    as the TLS server name (SNI) and verified with that context."""
    t0 = time.monotonic()
    sent, error = 0, None
    if tls is None:
        conn = http.client.HTTPConnection("127.0.0.1", ingress.port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", ingress.tls_port, timeout=timeout, context=tls)
        try:
            raw = socket.create_connection(("127.0.0.1", ingress.tls_port), timeout=timeout)
            conn.sock = tls.wrap_socket(raw, server_hostname=host)
        except OSError as exc:  # ssl.SSLError included: a certificate that does not verify
            return Answer(None, {}, b"", 0, time.monotonic() - t0, f"TLS handshake: {exc!r}")
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        while body is not None and sent < len(body):
            conn.send(body[sent:sent + chunk])
            sent = min(len(body), sent + chunk)
            if pace and sent < len(body):
                time.sleep(pace)
    except OSError as exc:
        error = f"while sending: {exc!r}"
    try:
        resp = conn.getresponse()
        out = Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read(), sent,
                     time.monotonic() - t0, error)
    except (OSError, http.client.HTTPException) as exc:
        out = Answer(None, {}, b"", sent, time.monotonic() - t0, f"{error or ''} reading the answer: {exc!r}".strip())
    finally:
        conn.close()
    return out


def wait_routed(ingress, host: str, path: str = "/health", timeout: float = 120,
                tls: ssl.SSLContext | None = None) -> Answer:
    """Until the controller routes `host` to a server that answers 200 (it picks up a new Ingress or
    HTTPRoute a few seconds after it appears, and its backends once they are Ready)."""
    last: list[Answer] = []

    def probe():
        a = request(ingress, host, "GET", path, timeout=10, tls=tls)
        last[:] = [a]
        return a if a.status == 200 else None

    return wait_for(f"{host}{path} answered 200 through the controller", probe, timeout=timeout, interval=1,
                    explain=lambda: f"last answer: {last[0] if last else None}\ncontroller log:\n{ingress.logs()[-3000:]}")


def served(ingress, host: str, path_prefix: str, method: str | None = None) -> list[dict]:
    """The controller's access-log lines for requests to `host` whose path starts with `path_prefix`."""
    return [e for e in ingress.access_log()
            if e.get("RequestHost") == host and str(e.get("RequestPath", "")).startswith(path_prefix)
            and (method is None or e.get("RequestMethod") == method)]


def pod_ips(real, instance: str, component: str) -> set[str]:
    return {p["status"]["podIP"] for p in real.ready_pods(instance, component)}


def backend_ip(entry: dict) -> str:
    return str(entry.get("ServiceAddr", "")).rpartition(":")[0]


def is_mlflow_json(answer: Answer) -> bool:
    try:
        json.loads(answer.body)
    except ValueError:
        return False
    return "json" in answer.content_type
