"""An NGINX ingress controller stand-in: Debian's /usr/sbin/nginx configured from the cluster's Ingresses.

It serves the Ingresses of its IngressClass (`nginx`, controller k8s.io/ingress-nginx) the way
ingress-nginx does, for the subset the operator renders:
- one `server` per host on ADDRESS:80, plus ADDRESS:443 with the certificate of the Ingress' TLS Secret
  (the host's own kubernetes.io/tls Secret; a self-signed default when the Secret is missing) and an
  HTTP->HTTPS 308 redirect for TLS hosts (ssl-redirect, on by default);
- paths: Prefix `/p` matches `/p` and `/p/...` (`location = /p` and `location /p/`), Exact `= /p`;
  the most specific wins (NGINX's longest prefix);
- backends: the Service port's ready endpoints from the real EndpointSlices (as ingress-nginx does;
  not the ClusterIP), at their loopback images (network.py); no ready endpoint: 503;
- annotations nginx.ingress.kubernetes.io/: proxy-body-size (default 1m, as ingress-nginx),
  proxy-read-timeout / proxy-send-timeout (default 60), proxy-connect-timeout (default 5),
  proxy-request-buffering (default on), proxy-buffering (default off), ssl-redirect. Other
  annotations of that prefix are reported in `ignored_annotations` (not emulated), not silently used.
- headers: Host, X-Forwarded-For/-Host/-Port/-Proto, X-Real-IP, as ingress-nginx sets them.

Clients reach it at ADDRESS (a loopback address of its own, so it can listen on the real ports 80 and
443 and the TrackingServer's status.url works verbatim) with the Ingress host mapped to ADDRESS in their
own /etc/hosts (tests run clients in a mount namespace with that hosts file: see conftest.py).
The access log records the host, the upstream address and the status of every request.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import pwd
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from .kube import Informer, Kube, Obj
from .network import POD_NETWORK, ready_endpoints

log = logging.getLogger("podrunner")

NGINX = Path("/usr/sbin/nginx")
PREFIX = "nginx.ingress.kubernetes.io/"
CONTROLLER = "k8s.io/ingress-nginx"
EMULATED = {"proxy-body-size", "proxy-read-timeout", "proxy-send-timeout", "proxy-connect-timeout",
            "proxy-request-buffering", "proxy-buffering", "ssl-redirect"}
GENERATION_PATH = "/.podrunner-ingress-generation"
GENERATION_TOKEN = "@GENERATION@"


class IngressError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In the child before exec: SIGQUIT (graceful stop) when the test process dies, even by SIGKILL."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGQUIT, 0, 0, 0)  # PR_SET_PDEATHSIG


class IngressController:
    def __init__(self, kube: Kube, workdir: Path, address: str = "127.80.0.1", http_port: int = 80,
                 https_port: int = 443, ingress_class: str = "nginx", pod_cidr=POD_NETWORK):
        if not NGINX.exists():
            raise IngressError("NGINX is not installed (/usr/sbin/nginx); run hack/system-deps (nginx-light)")
        self.kube, self.dir, self.address, self.pod_cidr = kube, Path(workdir), address, pod_cidr
        self.http_port, self.https_port, self.ingress_class = http_port, https_port, ingress_class
        self.conf = self.dir / "nginx.conf"
        self.access_log = self.dir / "access.log"
        self.error_log = self.dir / "error.log"
        self.proc: subprocess.Popen | None = None
        self.generation = 0
        self.rendered = ""
        self.hosts: list[str] = []
        self.ignored_annotations: dict[str, list[str]] = {}
        self.errors: list[str] = []
        self.dirty = threading.Event()
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.ingresses = Informer(kube, "/apis/networking.k8s.io/v1/ingresses", self._changed, name="ingresses")
        self.services = Informer(kube, "/api/v1/services", self._changed, name="ingress-services")
        self.slices = Informer(kube, "/apis/discovery.k8s.io/v1/endpointslices", self._changed, name="ingress-slices")
        self.secrets = Informer(kube, "/api/v1/secrets", self._changed, query={"fieldSelector": "type=kubernetes.io/tls"},
                                name="ingress-tls-secrets")
        self.thread = threading.Thread(target=self._loop, name="ingress-sync", daemon=True)

    # ---- lifecycle

    def start(self) -> "IngressController":
        self.dir.mkdir(parents=True, exist_ok=True)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "certs"):
            (self.dir / sub).mkdir(exist_ok=True)
        self._default_certificate()
        self._ensure_ingress_class()
        self._write(self.render())
        self._check_config()
        self._chown_for_workers()
        log_fh = open(self.dir / "stderr.log", "ab")
        self.proc = subprocess.Popen([str(NGINX), "-c", str(self.conf), "-p", str(self.dir), "-e", str(self.error_log)],
                                     stdout=log_fh, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        log_fh.close()
        self._wait_generation(self.generation, 15)
        for inf in (self.ingresses, self.services, self.slices, self.secrets):
            inf.start()
        for inf in (self.ingresses, self.services, self.slices, self.secrets):
            if not inf.synced.wait(30):
                raise IngressError(f"ingress controller: {inf.path} did not sync in 30 s")
        self.sync()
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        for inf in (self.ingresses, self.services, self.slices, self.secrets):
            inf.stop()
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def _ensure_ingress_class(self) -> None:
        if self.kube.get(f"/apis/networking.k8s.io/v1/ingressclasses/{self.ingress_class}") is None:
            self.kube.create("/apis/networking.k8s.io/v1/ingressclasses", {
                "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": self.ingress_class}, "spec": {"controller": CONTROLLER}})

    def _default_certificate(self) -> None:
        crt, key = self.dir / "certs" / "default.crt", self.dir / "certs" / "default.key"
        if not crt.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                            "-keyout", str(key), "-out", str(crt), "-days", "30",
                            "-subj", "/CN=Kubernetes Ingress Controller Fake Certificate"],
                           check=True, capture_output=True)

    def _chown_for_workers(self) -> None:
        """The master runs as root (ports 80/443); its workers as nobody, who writes the temp dirs and logs."""
        if os.geteuid() != 0:
            return
        nobody = pwd.getpwnam("nobody")
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.chown(self.dir / sub, nobody.pw_uid, nobody.pw_gid)
        for f in (self.access_log, self.error_log):
            f.touch()
            os.chown(f, nobody.pw_uid, nobody.pw_gid)

    # ---- keeping the config current

    def _changed(self, kind: str, obj: Obj) -> None:
        self.dirty.set()

    def _loop(self) -> None:
        while not self.stopped.is_set():
            self.dirty.wait(1.0)
            if self.stopped.is_set():
                return
            if not self.dirty.is_set():
                continue
            time.sleep(0.1)  # one reload for a burst of changes
            self.dirty.clear()
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - keep serving the last good config
                log.exception("ingress sync failed")
                self.errors.append(repr(exc))

    def sync(self) -> None:
        with self.lock:
            text = self.render()
            if text == self.rendered:
                return
            self.generation += 1
            self._write(text)
            self._check_config()
            if self.proc is not None:
                if self.proc.poll() is not None:
                    raise IngressError(f"nginx exited with {self.proc.returncode}: {self._tail(self.error_log)}")
                os.kill(self.proc.pid, signal.SIGHUP)
                self._wait_generation(self.generation, 15)

    def _write(self, text: str) -> None:
        """`text` has the generation as a placeholder, so that equal configs compare equal."""
        self.conf.write_text(text.replace(GENERATION_TOKEN, str(self.generation)))
        self.rendered = text

    def _check_config(self) -> None:
        proc = subprocess.run([str(NGINX), "-t", "-q", "-c", str(self.conf), "-p", str(self.dir), "-e", str(self.error_log)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise IngressError(f"nginx refuses the generated config: {proc.stderr.strip()}\n--- {self.conf}")

    def _wait_generation(self, generation: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{self.address}:{self.http_port}{GENERATION_PATH}"
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise IngressError(f"nginx exited with {self.proc.returncode}:\n{self._tail(self.dir / 'stderr.log')}"
                                   f"\n{self._tail(self.error_log)}")
            try:
                req = urllib.request.Request(url, headers={"Host": "podrunner-ingress-status.invalid"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    last = r.read().decode()
                    if last == str(generation):
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise IngressError(f"nginx did not load config generation {generation} within {timeout:g} s (last: {last})"
                           f"\n{self._tail(self.error_log)}")

    @staticmethod
    def _tail(path: Path, lines: int = 20) -> str:
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # ---- rendering

    def _mine(self, ing: Obj) -> bool:
        return (ing.get("spec") or {}).get("ingressClassName") == self.ingress_class

    def _backends(self, namespace: str, backend: Obj) -> list[str]:
        svc_ref = backend.get("service")
        if not svc_ref:
            return []
        svc = self.services.get(namespace, svc_ref["name"])
        if svc is None:
            return []
        want = svc_ref.get("port") or {}
        port = next((p for p in (svc.get("spec") or {}).get("ports") or []
                     if ("name" in want and p.get("name") == want["name"]) or ("number" in want and p.get("port") == want["number"])),
                    None)
        if port is None:
            return []
        endpoints = ready_endpoints(self.slices.items(), namespace, svc_ref["name"], port.get("name") or "", self.pod_cidr)
        return [f"{address}:{number}" for address, number in endpoints]

    def _tls_files(self, namespace: str, secret_name: str) -> tuple[Path, Path]:
        secret = self.secrets.get(namespace, secret_name)
        if secret is None or not {"tls.crt", "tls.key"} <= set(secret.get("data") or {}):
            return self.dir / "certs" / "default.crt", self.dir / "certs" / "default.key"
        crt = base64.b64decode(secret["data"]["tls.crt"])
        key = base64.b64decode(secret["data"]["tls.key"])
        digest = hashlib.sha256(crt + key).hexdigest()[:16]
        crt_path = self.dir / "certs" / f"{namespace}-{secret_name}-{digest}.crt"
        key_path = crt_path.with_suffix(".key")
        if not crt_path.exists():
            crt_path.write_bytes(crt)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
        return crt_path, key_path

    def render(self) -> str:
        servers: dict[str, dict] = {}
        upstreams: dict[str, list[str]] = {}
        ignored: dict[str, list[str]] = {}
        for ing in sorted(self.ingresses.items(), key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"])):
            if not self._mine(ing):
                continue
            meta, spec = ing["metadata"], ing.get("spec") or {}
            ns = meta["namespace"]
            ann = {k[len(PREFIX):]: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(PREFIX)}
            skipped = sorted(k for k in ann if k not in EMULATED)
            if skipped:
                ignored[f"{ns}/{meta['name']}"] = skipped
            tls_hosts = {h: t.get("secretName") for t in spec.get("tls") or [] for h in t.get("hosts") or []}
            for rule in spec.get("rules") or []:
                host = rule.get("host") or "_"
                server = servers.setdefault(host, {"tls": None, "locations": {}})
                if host in tls_hosts and server["tls"] is None:
                    server["tls"] = self._tls_files(ns, tls_hosts[host])
                    server["redirect"] = ann.get("ssl-redirect", "true") == "true"
                for path in (rule.get("http") or {}).get("paths") or []:
                    p = path.get("path") or "/"
                    kind = path.get("pathType", "Prefix")
                    backend = path.get("backend") or {}
                    svc = backend.get("service") or {}
                    port = (svc.get("port") or {})
                    name = f"{ns}-{svc.get('name')}-{port.get('name') or port.get('number')}"
                    upstreams[name] = self._backends(ns, backend)
                    matchers = []
                    if kind == "Exact":
                        matchers = [f"= {p}"]
                    elif kind == "Prefix" and p != "/":
                        base = p.rstrip("/")
                        matchers = [f"= {base}", f"{base}/"]
                    else:
                        matchers = [p]
                    for m in matchers:
                        server["locations"].setdefault(m, (name, ann))
        self.hosts = sorted(h for h in servers if h != "_")
        self.ignored_annotations = ignored
        return self._config(servers, upstreams)

    def _config(self, servers: dict, upstreams: dict[str, list[str]]) -> str:
        d = self.dir
        out = [
            "daemon off;", "worker_processes 1;", f"pid {d}/nginx.pid;", f"error_log {self.error_log} notice;",
            "events { worker_connections 1024; }", "http {",
            "  log_format podrunner '$remote_addr host=$host \"$request\" status=$status upstream=$upstream_addr "
            "request_length=$request_length bytes_sent=$body_bytes_sent request_time=$request_time';",
            f"  access_log {self.access_log} podrunner;",
            f"  client_body_temp_path {d}/client_body;", f"  proxy_temp_path {d}/proxy;",
            f"  fastcgi_temp_path {d}/fastcgi;", f"  uwsgi_temp_path {d}/uwsgi;", f"  scgi_temp_path {d}/scgi;",
            "  server_names_hash_bucket_size 128;", "  proxy_http_version 1.1;", "  sendfile on;",
            f"  ssl_certificate {d}/certs/default.crt;", f"  ssl_certificate_key {d}/certs/default.key;",
            "  # the status server: unknown hosts get 404, and the config generation (for reload checks)",
            "  server {",
            f"    listen {self.address}:{self.http_port} default_server;",
            f"    listen {self.address}:{self.https_port} ssl default_server;",
            f"    location = {GENERATION_PATH} {{ return 200 \"{GENERATION_TOKEN}\"; }}",
            "    location / { return 404; }",
            "  }",
        ]
        for name, backends in sorted(upstreams.items()):
            if backends:
                out.append(f"  upstream {name} {{")
                out += [f"    server {b} max_fails=0;" for b in backends]
                out += ["    keepalive 32;", "  }"]
        for host, server in sorted(servers.items()):
            out.append("  server {")
            out.append(f"    server_name {host};")
            out.append(f"    listen {self.address}:{self.http_port};")
            if server["tls"]:
                crt, key = server["tls"]
                out += [f"    listen {self.address}:{self.https_port} ssl;", f"    ssl_certificate {crt};",
                        f"    ssl_certificate_key {key};"]
            for matcher, (upstream, ann) in sorted(server["locations"].items(), key=lambda kv: -len(kv[0])):
                out.append(f"    location {matcher} {{")
                if server["tls"] and server.get("redirect"):
                    out.append("      if ($scheme = http) { return 308 https://$host$request_uri; }")
                out.append(f"      client_max_body_size {ann.get('proxy-body-size', '1m')};")
                out.append(f"      proxy_connect_timeout {ann.get('proxy-connect-timeout', '5')}s;")
                out.append(f"      proxy_send_timeout {ann.get('proxy-send-timeout', '60')}s;")
                out.append(f"      proxy_read_timeout {ann.get('proxy-read-timeout', '60')}s;")
                out.append(f"      proxy_request_buffering {ann.get('proxy-request-buffering', 'on')};")
                out.append(f"      proxy_buffering {ann.get('proxy-buffering', 'off')};")
                out += ["      proxy_set_header Host $host;", "      proxy_set_header X-Real-IP $remote_addr;",
                        "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                        "      proxy_set_header X-Forwarded-Host $host;", "      proxy_set_header X-Forwarded-Port $server_port;",
                        "      proxy_set_header X-Forwarded-Proto $scheme;", "      proxy_set_header Connection \"\";"]
                if upstreams.get(upstream):
                    out.append(f"      proxy_pass http://{upstream};")
                else:
                    out.append("      return 503;")
                out.append("    }")
            out.append("  }")
        out.append("}")
        return "\n".join(out) + "\n"

    # ---- for tests

    def hosts_lines(self) -> list[str]:
        return [f"{self.address}\t{h}" for h in self.hosts]

    def access_lines(self) -> list[str]:
        return self.access_log.read_text(errors="replace").splitlines() if self.access_log.exists() else []
