"""Start, use and stop the local control plane (see the package docstring)."""
from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
import urllib.request
from pathlib import Path
from typing import Any, Callable

from . import audit, build, certs, ingress_controller, kubeconfig, kwok_stages, netns, node_build, versions
from .node import NODE_IP, APISERVER_PORT, Node, NodeError
from .processes import Process, free_port, group_members, stop_all, tail

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.1/16"
FAKE_NODE_IP = "10.1.0.1"
ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_FAKE_NODES = ("kwok-node-0",)

Log = Callable[[str], None]


class ClusterError(RuntimeError):
    """The control plane could not be built, started or used; the message says why."""


class KubectlError(ClusterError):
    def __init__(self, args: list[str], proc: subprocess.CompletedProcess):
        self.proc = proc
        self.stderr = proc.stderr
        super().__init__(f"kubectl {' '.join(args)} failed (exit {proc.returncode}): {str(proc.stderr).strip()}")


def _log(msg: str) -> None:
    print(f"[localcluster] {msg}", file=sys.stderr, flush=True)


# Clusters started by this Python process, stopped at exit and on SIGTERM/SIGHUP.
_LIVE: list["Cluster"] = []
_HANDLERS_INSTALLED = False


def _stop_live() -> None:
    for c in list(_LIVE):
        try:
            c.stop()
        except Exception as exc:  # keep stopping the others
            _log(f"stopping {c.workdir} failed: {exc}")


_PREVIOUS_HANDLERS: dict[int, Any] = {}


def _on_signal(signum: int, frame: Any) -> None:
    _stop_live()
    previous = _PREVIOUS_HANDLERS.get(signum)
    if callable(previous):  # another guard (hack/testservices'): it ends the process in its turn
        previous(signum, frame)
        return
    # Restore the default and re-raise, so the process ends the way it was asked to.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(_stop_live)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(sig)
            if previous is not signal.SIG_IGN and previous is not _on_signal:
                _PREVIOUS_HANDLERS[sig] = previous
                signal.signal(sig, _on_signal)
    # SIGINT raises KeyboardInterrupt: pytest runs fixture finalizers, then atexit runs.


class Cluster:
    """A Kubernetes API to test against: our local control plane, or an existing cluster given by
    a kubeconfig (then `owned` is False and stop() leaves it alone).

    Attributes: kubeconfig (admin kubeconfig, Path), bin_dir (kubectl, helm, ...), server (URL),
    ca_file / admin_cert (certificates of an owned cluster), workdir (temp dir with logs).
    """

    def __init__(
        self,
        kubeconfig: Path,
        bin_dir: Path,
        *,
        server: str | None = None,
        workdir: Path | None = None,
        processes: list[Process] | None = None,
        owned: bool = False,
        ca: certs.CertificateAuthority | None = None,
        admin_cert: certs.KeyPair | None = None,
        detached: bool = False,
        node: Node | None = None,
    ):
        self.kubeconfig = Path(kubeconfig)
        self.bin_dir = Path(bin_dir)
        self.workdir = workdir
        self.processes = processes or []
        self.owned = owned
        self.ca = ca
        self.admin_cert = admin_cert
        self.detached = detached
        self.node = node  # the real node (start(node=True)), else None
        self.ingress = None  # ingress_controller.NodeIngress (start(node=True, ingress=True)), else None
        self._server = server
        self._stopped = False
        self._sa_dir: Path | None = None
        self._installed: set[tuple[str, ...]] = set()

    @classmethod
    def existing(cls, kubeconfig_path: str | Path) -> "Cluster":
        """Wrap a cluster we did not start (kind, a real one): nothing is built or stopped.
        kubectl/helm come from our cache when built, else from PATH."""
        path = Path(kubeconfig_path).expanduser()
        if not path.is_file():
            raise ClusterError(f"kubeconfig {path} does not exist")
        bins = build.bin_dir()
        if not (bins / "kubectl").is_file() and shutil.which("kubectl"):
            bins = Path(shutil.which("kubectl")).parent
        return cls(path, bins, owned=False)

    # ---------------------------------------------------------------- info
    @property
    def server(self) -> str:
        if self._server is None:
            self._server = self._current_cluster()["server"]
        return self._server

    @property
    def ca_file(self) -> Path | None:
        return self.ca.cert if self.ca else None

    @property
    def log_dir(self) -> Path | None:
        return self.workdir / "logs" if self.workdir else None

    @property
    def audit_log(self) -> Path | None:
        """The API server's audit log (see audit.py); None for a cluster we did not start."""
        return self.log_dir / "audit.log" if self.log_dir else None

    def audit_requests(self, user: str | None = None, since=None, until=None) -> list[audit.Request]:
        """Requests of service accounts outside kube-system, from the audit log (owned clusters)."""
        if not self.audit_log:
            raise ClusterError("the audit log is only kept for a cluster started by localcluster")
        return list(audit.requests(self.audit_log, user, since, until))

    def logs(self, name: str, lines: int = 40) -> str:
        """Tail of a component's log (etcd, kube-apiserver, kube-controller-manager, ...)."""
        if not self.log_dir:
            return "(not an owned cluster: no logs)"
        return tail(self.log_dir / f"{name}.log", lines)

    def _current_cluster(self) -> dict:
        view = json.loads(self.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout)
        return view["clusters"][0]["cluster"]

    def __repr__(self) -> str:
        kind = "local" if self.owned else "existing"
        return f"<Cluster {kind} {self._server or ''} kubeconfig={self.kubeconfig}>"

    # ---------------------------------------------------------------- clients
    def api_client(self):
        """A kubernetes.client.ApiClient with admin rights (imported lazily: the CLI is stdlib-only)."""
        from kubernetes import config as k8s_config

        return k8s_config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl_path(self) -> Path:
        exe = self.bin_dir / "kubectl"
        if exe.is_file():
            return exe
        found = shutil.which("kubectl")
        if found:
            return Path(found)
        raise ClusterError(f"kubectl not found in {self.bin_dir} nor on PATH (run `hack/cluster build`)")

    def kubectl(
        self,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float = 120,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess:
        """Run kubectl against this cluster (admin unless `kubeconfig` is given); text output.
        check=True raises KubectlError with kubectl's stderr."""
        cmd = [str(self.kubectl_path()), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args]
        text = not isinstance(input, bytes)
        try:
            proc = subprocess.run(
                cmd, input=input, capture_output=True, text=text, timeout=timeout,
                stdin=subprocess.DEVNULL if input is None else None,  # never an interactive prompt
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"kubectl {' '.join(args)} did not finish within {timeout:.0f}s") from exc
        if check and proc.returncode != 0:
            raise KubectlError(list(args), proc)
        return proc

    def helm(self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess:
        """Run helm against this cluster (admin kubeconfig)."""
        exe = self.bin_dir / "helm"
        if not exe.is_file():
            exe = Path(shutil.which("helm") or exe)
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        if self.workdir:  # keep helm's cache/config out of $HOME
            for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")):
                env.setdefault(var, str(self.workdir / "helm" / sub))
        proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise ClusterError(f"helm {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc

    # ---------------------------------------------------------------- CRDs
    def _apply_crds(self, files: list[Path], what: str) -> list[str]:
        """Server-side apply the files; wait until each CRD in them is Established. Repeated
        calls on one Cluster only check that the CRDs are still there (tests call this often)."""
        if not files:
            raise ClusterError(f"no CRD files for {what}")
        names = [n for f in files for n in crd_names(f.read_text())]
        key = tuple(str(f) for f in files)
        if key in self._installed and names:
            proc = self.kubectl("get", *[f"crd/{n}" for n in names], "-o", "name", check=False)
            if proc.returncode == 0:
                return names
        args = ["apply", "--server-side", "--force-conflicts"]
        for f in files:
            args += ["-f", str(f)]
        self.kubectl(*args)
        if names:
            self._wait_established(names)
        self._installed.add(key)
        return names

    def _wait_established(self, names: list[str], timeout: float = 60) -> None:
        """Polls rather than `kubectl wait`, which fails at once while a new CRD has no conditions yet."""
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            proc = self.kubectl("get", *[f"crd/{n}" for n in pending], "-o", "json", check=False)
            if proc.returncode == 0:
                data = json.loads(proc.stdout)
                items = data.get("items", [data])
                done = {
                    i["metadata"]["name"]
                    for i in items
                    if any(c.get("type") == "Established" and c.get("status") == "True"
                           for c in (i.get("status") or {}).get("conditions") or [])
                }
                pending = [n for n in pending if n not in done]
            if pending and time.monotonic() > deadline:
                raise ClusterError(f"CRDs not Established within {timeout:.0f}s: {', '.join(pending)}")
            if pending:
                time.sleep(0.2)

    def install_gateway_api_crds(self, channel: str = "standard") -> list[str]:
        """Install the Gateway API CRDs (sigs.k8s.io/gateway-api, `standard` or `experimental`)
        and wait until they are Established. Returns the CRD names."""
        build.ensure_crds()
        files = sorted(build.gateway_api_crd_dir(channel).glob("*.yaml"))
        return self._apply_crds(files, f"Gateway API {versions.GATEWAY_API} ({channel})")

    def install_servicemonitor_crd(self) -> list[str]:
        """Install prometheus-operator's ServiceMonitor CRD (monitoring.coreos.com/v1)."""
        build.ensure_crds()
        return self._apply_crds([build.servicemonitor_crd_file()], "ServiceMonitor")

    # ---------------------------------------------------------------- credentials
    def admin_credentials(self) -> dict:
        """server URL, CA and admin client certificate/key paths (owned clusters)."""
        if not (self.ca and self.admin_cert):
            raise ClusterError("admin certificates are only known for a cluster started by localcluster")
        return {"server": self.server, "ca_file": self.ca.cert, "cert_file": self.admin_cert.cert, "key_file": self.admin_cert.key}

    def client_certificate(self, common_name: str, organizations: tuple[str, ...] = ()) -> certs.KeyPair:
        """A client certificate signed by the cluster CA: user `common_name`, groups
        `organizations` (e.g. CN=system:node:<name>, O=system:nodes for a kubelet)."""
        if not self.ca:
            raise ClusterError("client certificates can only be issued for a cluster started by localcluster")
        safe = "".join(c if c.isalnum() else "-" for c in common_name)
        return self.ca.issue(f"client-{safe}-{time.monotonic_ns()}", common_name, tuple(organizations))

    def kubeconfig_for_certificate(self, pair: certs.KeyPair, path: Path | None = None) -> Path:
        cfg = kubeconfig.build(self.server, ca_file=self.ca.cert, cert_file=pair.cert, key_file=pair.key, user_name=pair.cert.stem)
        return kubeconfig.write(path or pair.cert.with_suffix(".kubeconfig"), cfg)

    def kubeconfig_for_service_account(
        self, namespace: str, name: str, *, expiration_seconds: int = 3600, path: Path | None = None
    ) -> Path:
        """Mint a token for ServiceAccount namespace/name through the TokenRequest API and write a
        kubeconfig that authenticates with it (default namespace set to `namespace`)."""
        token = self.kubectl("create", "token", name, "-n", namespace, f"--duration={expiration_seconds}s").stdout.strip()
        if not token:
            raise ClusterError(f"TokenRequest for serviceaccount {namespace}/{name} returned no token")
        cluster = self._current_cluster()
        cfg = kubeconfig.build(
            cluster["server"],
            ca_data=cluster.get("certificate-authority-data"),
            token=token,
            user_name=f"system:serviceaccount:{namespace}:{name}",
            namespace=namespace,
        )
        if cluster.get("insecure-skip-tls-verify"):
            cfg["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = True
        if path is None:
            if self._sa_dir is None:
                self._sa_dir = Path(tempfile.mkdtemp(prefix="localcluster-sa-", dir=self.workdir))
            path = self._sa_dir / f"{namespace}.{name}.kubeconfig"
        return kubeconfig.write(path, cfg)

    def kwok_nodes(self) -> list[str]:
        """Names of Ready fake nodes run by kwok (annotated kwok.x-k8s.io/node=fake): where pods
        "run" without images. Empty on a cluster without kwok (kind, a real one)."""
        nodes = json.loads(self.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        out = []
        for n in nodes:
            if (n["metadata"].get("annotations") or {}).get(kwok_stages.FAKE_NODE_ANNOTATION) != kwok_stages.FAKE_NODE_ANNOTATION_VALUE:
                continue
            conds = n.get("status", {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                out.append(n["metadata"]["name"])
        return out

    # ---------------------------------------------------------------- the real node
    def load_image(self, archive: str | Path) -> list[str]:
        """Import an OCI archive (`buildah push IMG oci-archive:FILE:REF`) into the node's
        containerd; pods find it by REF with imagePullPolicy Never or IfNotPresent. Returns
        the image names imported. Only for a cluster started with node=True."""
        if self.node is None:
            raise ClusterError("load_image needs a real node: start the cluster with localcluster.start(node=True)")
        try:
            return self.node.load_image(archive)
        except NodeError as exc:
            raise ClusterError(str(exc)) from exc

    # ---------------------------------------------------------------- lifecycle
    def alive(self) -> dict[str, bool]:
        out = {p.name: p.alive() for p in self.processes}
        if self.node is not None:
            out.update(self.node.alive())
        return out

    def _teardown(self) -> list[str]:
        """Stop the node's components, the control plane, then the node's namespaces; raise
        ClusterError if anything is left. Returns the names that needed SIGKILL."""
        problems = []
        if self.node is not None:
            try:
                self.node.stop_components()
            except Exception as exc:  # keep stopping the rest
                problems.append(f"node components: {exc}")
        killed = stop_all(self.processes)
        left = [p.pid for p in self.processes if group_members(p.pid)]
        if left:
            problems.append(f"processes still running after stop: {left}")
        if self.node is not None:
            try:
                self.node.destroy()
            except NodeError as exc:
                problems.append(str(exc))
        if problems:
            raise ClusterError("; ".join(problems))
        return killed

    def stop(self, keep_workdir: bool | None = None) -> None:
        """Stop every process this cluster started (process groups, TERM then KILL) and remove
        its temp dir (kept when LOCALCLUSTER_KEEP=1). No-op for an existing cluster."""
        if self._stopped:
            return
        self._stopped = True
        if self in _LIVE:
            _LIVE.remove(self)
        if self._sa_dir:
            shutil.rmtree(self._sa_dir, ignore_errors=True)
        if not self.owned:
            return
        killed = self._teardown()
        if killed:
            _log(f"had to SIGKILL: {', '.join(killed)}")
        if keep_workdir is None:
            keep_workdir = os.environ.get("LOCALCLUSTER_KEEP") == "1"
        if self.workdir and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---------------------------------------------------------------- state (hack/cluster up/down)
    def to_state(self) -> dict:
        return {
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "workdir": str(self.workdir),
            "bin_dir": str(self.bin_dir),
            "kubernetes": versions.KUBERNETES,
            "processes": [p.to_state() for p in self.processes],
            "node": self.node.to_state() if self.node else None,
        }

    @classmethod
    def from_state(cls, state: dict) -> "Cluster":
        workdir = Path(state["workdir"])
        pki = workdir / "pki"
        return cls(
            Path(state["kubeconfig"]),
            Path(state["bin_dir"]),
            server=state["server"],
            workdir=workdir,
            processes=[Process.from_state(p) for p in state["processes"]],
            owned=True,
            ca=certs.CertificateAuthority(pki) if (pki / "ca.crt").is_file() else None,
            admin_cert=certs.KeyPair(pki / "admin.crt", pki / "admin.key"),
            detached=True,
            node=Node.from_state(state["node"], _log) if state.get("node") else None,
        )


def crd_names(text: str) -> list[str]:
    """metadata.name of every CustomResourceDefinition in a multi-document YAML text (these
    generated files put `kind:` and `metadata:` at column 0; no YAML parser needed)."""
    names: list[str] = []
    for doc in ("\n" + text).split("\n---"):
        kind = name = None
        in_meta = False
        for line in doc.splitlines():
            if line.startswith("kind:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("metadata:"):
                in_meta = True
            elif in_meta and line.startswith("  name:") and name is None:
                name = line.split(":", 1)[1].strip().strip("'\"")
            elif line and not line.startswith((" ", "#")):
                in_meta = False
        if kind == "CustomResourceDefinition" and name:
            names.append(name)
    return names


# ==================================================================== starting
class _Api:
    """Minimal stdlib HTTPS client with the admin certificate, for readiness checks."""

    def __init__(self, server: str, ca: Path, cert: certs.KeyPair):
        self.server = server
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.ctx.load_cert_chain(str(cert.cert), str(cert.key))

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 5) -> tuple[int, str]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")
        except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError, OSError) as err:
            return 0, str(err)


def _insecure_healthz(port: int) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code
    except Exception:
        return 0


def start(
    *,
    fake_nodes: tuple[str, ...] | None = None,
    node: bool = False,
    ingress: bool = False,
    timeout: float | None = None,
    detached: bool = False,
    log: Log = _log,
) -> Cluster:
    """Build (if needed) and start a control plane on 127.0.0.1 in a fresh temp dir; return when
    /readyz is ok, the default ServiceAccount exists and the fake nodes are Ready.

    node=True: a real node too (see node.py): the control plane, containerd, the kubelet,
    kube-proxy, CoreDNS and local-path-provisioner in a network namespace of the cluster's own;
    the API server is reached through a forwarder on 127.0.0.1. No kwok nodes unless
    `fake_nodes` names some (pods would be scheduled on them). Needs root.

    ingress=True (with node=True): Traefik serving IngressClass `nginx` and the Gateway
    `traefik/mlflow` on the node, reached from the host at 127.0.0.1:`cluster.ingress.port`
    (ingress_controller.py; built on first use).

    detached=True (for `hack/cluster up`): processes survive this Python process; otherwise they
    are stopped at exit, on SIGTERM/SIGHUP, and get SIGTERM from the kernel if it dies.
    Raises ClusterError (with the failing component's log tail) when anything fails."""
    if fake_nodes is None:
        fake_nodes = () if node else DEFAULT_FAKE_NODES
    if timeout is None:
        timeout = 240.0 if node else 90.0
    try:
        bin_dir = build.ensure(log)
        if node:
            node_build.ensure(log)
        if node and ingress:  # before the cluster starts: a cold build takes minutes
            ingress_controller.ensure(log)
    except build.BuildError as exc:
        raise ClusterError(f"could not build the {'node' if node else 'control plane'}: {exc}") from exc
    for attempt in (1, 2):
        try:
            return _start_once(bin_dir, fake_nodes, timeout, detached, log, node, ingress)
        except ClusterError as exc:
            # Free ports are picked before the processes bind them; another process may take
            # one meanwhile. Try once more with fresh ports.
            if attempt == 1 and "address already in use" in str(exc):
                log(f"a port was taken meanwhile, retrying with fresh ports: {str(exc).splitlines()[0]}")
                continue
            raise
    raise AssertionError("unreachable")


def _start_once(bin_dir: Path, fake_nodes: tuple[str, ...], timeout: float, detached: bool, log: Log,
                with_node: bool = False, with_ingress: bool = False) -> Cluster:
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="localcluster-"))
    logs = workdir / "logs"
    logs.mkdir()
    cluster = Cluster(workdir / "kubeconfig", bin_dir, workdir=workdir, owned=True, detached=detached)
    if not detached:
        _install_handlers()
        _LIVE.append(cluster)
    try:
        phases: dict[str, float] = {}
        if with_node:
            cluster.node = Node(workdir, detached=detached, log=log)
            mark = time.monotonic()
            cluster.node.create_namespaces()
            phases["namespaces"] = time.monotonic() - mark
        phases.update(_start(cluster, bin_dir, workdir, fake_nodes, timeout, detached, log))
        if with_node:
            phases.update(cluster.node.start(cluster, timeout=timeout))
        if with_node and with_ingress:
            mark = time.monotonic()
            try:
                cluster.ingress = ingress_controller.install(cluster, log=log)
            except build.BuildError as exc:
                raise ClusterError(f"the ingress controller: {exc}") from exc
            phases["ingress"] = time.monotonic() - mark
    except BaseException as exc:
        logs_hint = f" (logs kept in {logs}" + (f" and {cluster.node.dir / 'logs'})" if cluster.node else ")")
        try:
            cluster._teardown()
        except ClusterError as stop_exc:
            log(f"cleaning up after the failed start: {stop_exc}")
        finally:
            cluster._stopped = True
            if cluster in _LIVE:
                _LIVE.remove(cluster)
        if isinstance(exc, (ClusterError, NodeError)):
            raise ClusterError(str(exc) + logs_hint) from exc
        if isinstance(exc, (certs.CertError, OSError)):
            raise ClusterError(f"could not start the {'node' if with_node else 'control plane'}: {exc}{logs_hint}") from exc
        raise
    detail = ", ".join(f"{k} {v:.1f}s" for k, v in phases.items())
    what = f"control plane and node {cluster.node.name}" if cluster.node else "control plane"
    log(f"{what} ready in {time.monotonic() - t0:.1f}s ({detail}): {cluster.server} (kubeconfig {cluster.kubeconfig})")
    return cluster


def _start(cluster: Cluster, bin_dir: Path, workdir: Path, fake_nodes: tuple[str, ...], timeout: float,
           detached: bool, log: Log) -> dict[str, float]:
    phases: dict[str, float] = {}
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name] = now - mark
        mark = now

    node = cluster.node
    pki = workdir / "pki"
    ca = certs.CertificateAuthority(pki)
    front_proxy_ca = certs.CertificateAuthority(pki / "front-proxy", "localcluster-front-proxy-ca")
    # openssl runs are independent once the CA exists: issue them concurrently.
    jobs = {
        "serving": lambda: ca.issue(
            "apiserver", "kube-apiserver", client=False,
            server_sans=("IP:127.0.0.1", f"IP:{SERVICE_IP}", *((f"IP:{NODE_IP}",) if node else ()),
                         "DNS:localhost", "DNS:kubernetes",
                         "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                         "DNS:kubernetes.default.svc.cluster.local"),
        ),
        "admin": lambda: ca.issue("admin", "kubernetes-admin", ("system:masters",)),
        "kubelet_client": lambda: ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
        "cm": lambda: ca.issue("controller-manager", "system:kube-controller-manager"),
        "sched": lambda: ca.issue("scheduler", "system:kube-scheduler"),
        "kwok": lambda: ca.issue("kwok", "kwok-controller", ("system:masters",)),
        "sa": lambda: certs.service_account_keys(pki),
        "front_proxy": lambda: front_proxy_ca.issue("front-proxy-client", "front-proxy-client"),
    }
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {k: pool.submit(fn) for k, fn in jobs.items()}
        made = {k: f.result() for k, f in futures.items()}
    serving, admin, kubelet_client = made["serving"], made["admin"], made["kubelet_client"]
    cm_cert, sched_cert, kwok_cert, sa = made["cm"], made["sched"], made["kwok"], made["sa"]
    front_proxy = made["front_proxy"]
    cluster.ca, cluster.admin_cert = ca, admin

    phase("certs")
    logs = workdir / "logs"

    def launch(name: str, argv: list[str]) -> Process:
        exe = argv[0]
        if node:  # the control plane lives in the node's network namespace
            argv = ["/usr/bin/nsenter", f"--net={node.netns_path}", "--", *argv]
        p = Process.start(name, argv, logs / f"{name}.log", die_with_parent=not detached, exe=exe)
        cluster.processes.append(p)
        return p

    if node:
        # Inside the namespace every port is free; the host reaches the API server through
        # a forwarder on a free loopback port.
        etcd_port, peer_port, api_port, cm_port, sched_port = 2379, 2380, APISERVER_PORT, 10257, 10259
        bind = NODE_IP
        internal_server = f"https://{NODE_IP}:{api_port}"
        port_file = workdir / "forward.port"
        fwd = Process.start("apiserver-forward", [
            sys.executable, "-S", str(Path(__file__).with_name("forward.py")), f"--netns={node.netns_path}",
            f"--target={NODE_IP}:{api_port}", f"--port-file={port_file}",
        ], logs / "apiserver-forward.log", die_with_parent=not detached)
        cluster.processes.append(fwd)
        fwd_deadline = time.monotonic() + 10
        while not port_file.is_file():
            if not fwd.alive() or time.monotonic() > fwd_deadline:
                raise ClusterError(f"the API server forwarder did not start: {tail(fwd.log)}")
            time.sleep(0.02)
        server = f"https://127.0.0.1:{int(port_file.read_text())}"
    else:
        etcd_port, peer_port, api_port, cm_port, sched_port = (free_port() for _ in range(5))
        bind = "127.0.0.1"
        server = internal_server = f"https://127.0.0.1:{api_port}"
    cluster._server = server
    kubeconfig.write(cluster.kubeconfig, kubeconfig.build(server, ca_file=ca.cert, cert_file=admin.cert, key_file=admin.key))
    kc = {}
    for name, pair in (("controller-manager", cm_cert), ("scheduler", sched_cert), ("kwok", kwok_cert)):
        kc[name] = kubeconfig.write(pki / f"{name}.kubeconfig",
                                    kubeconfig.build(internal_server, ca_file=ca.cert, cert_file=pair.cert, key_file=pair.key, user_name=name))
    (workdir / "kwok.yaml").write_text(kwok_stages.stages_yaml())
    (workdir / "audit-policy.yaml").write_text(audit.POLICY)
    b = lambda n: str(bin_dir / n)  # noqa: E731

    launch("etcd", [
        b("etcd"), "--name=localcluster", f"--data-dir={workdir / 'etcd'}",
        f"--listen-client-urls=http://127.0.0.1:{etcd_port}", f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
        f"--listen-peer-urls=http://127.0.0.1:{peer_port}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
        f"--initial-cluster=localcluster=http://127.0.0.1:{peer_port}", "--initial-cluster-state=new",
        "--unsafe-no-fsync=true", "--log-level=warn", "--listen-metrics-urls=",
    ])
    apiserver = launch("kube-apiserver", [
        b("kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        f"--bind-address={bind}", f"--advertise-address={bind}", f"--secure-port={api_port}",
        f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
        f"--client-ca-file={ca.cert}",
        f"--kubelet-client-certificate={kubelet_client.cert}", f"--kubelet-client-key={kubelet_client.key}",
        f"--service-account-issuer={ISSUER}", f"--service-account-key-file={sa.cert}",
        f"--service-account-signing-key-file={sa.key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # Endpoints may not hold loopback addresses: without a node, keep the `kubernetes`
        # Service without Endpoints rather than log a validation error every few seconds.
        # With one, pods reach the API server through it, as on any cluster.
        f"--endpoint-reconciler-type={'lease' if node else 'none'}",
        # The node is named, not resolvable: logs/exec/port-forward go to its InternalIP.
        *(["--kubelet-preferred-address-types=InternalIP,Hostname"] if node else []),
        "--authorization-mode=Node,RBAC",
        # OwnerReferencesPermissionEnforcement as OpenShift runs it: setting blockOwnerDeletion
        # needs `update` on the owner's finalizers subresource.
        "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,"
        "DefaultTolerationSeconds,NodeRestriction,PodSecurity,Priority,ResourceQuota,RuntimeClass,"
        "OwnerReferencesPermissionEnforcement,"
        "MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
        f"--audit-policy-file={workdir / 'audit-policy.yaml'}", f"--audit-log-path={logs / 'audit.log'}",
        "--audit-log-format=json", "--audit-log-maxbackup=0", "--audit-log-maxsize=0",
        "--allow-privileged=true",
        # Aggregation layer (front proxy), as in a kubeadm cluster.
        f"--requestheader-client-ca-file={front_proxy_ca.cert}", "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={front_proxy.cert}", f"--proxy-client-key-file={front_proxy.key}",
        "--profiling=false", "--v=1",
    ])
    api = _Api(server, ca.cert, admin)
    deadline = time.monotonic() + timeout

    def check_running(*procs: Process) -> None:
        for p in procs:
            if not p.alive():
                raise ClusterError(f"{p.name} exited with code {p.exit_code()} during start; last lines of {p.log}:\n{tail(p.log)}")

    def wait(what: str, cond: Callable[[], bool], relevant: Process) -> None:
        """Poll cond() until true; fail at once if any process died, or at the deadline with
        the tail of the relevant component's log."""
        while True:
            check_running(*cluster.processes)
            if cond():
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"timed out after {timeout:.0f}s waiting for {what}; last lines of {relevant.log}:\n{tail(relevant.log)}"
                )
            time.sleep(0.1)

    # The others need the API server's bootstrap (RBAC roles, the extension-apiserver-authentication
    # ConfigMap) and exit without it: start them once /readyz passes.
    wait("kube-apiserver /readyz", lambda: api.request("GET", "/readyz")[0] == 200, apiserver)
    phase("etcd+apiserver")
    cm = launch("kube-controller-manager", [
        b("kube-controller-manager"),
        f"--kubeconfig={kc['controller-manager']}",
        f"--authentication-kubeconfig={kc['controller-manager']}",
        f"--authorization-kubeconfig={kc['controller-manager']}",
        "--bind-address=127.0.0.1", f"--secure-port={cm_port}", "--leader-elect=false",
        "--controllers=*", "--use-service-account-credentials=true",
        f"--service-account-private-key-file={sa.key}", f"--root-ca-file={ca.cert}",
        f"--cluster-signing-cert-file={ca.cert}", f"--cluster-signing-key-file={ca.key}",
        f"--client-ca-file={ca.cert}", f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--profiling=false", "--v=1",
    ])
    sched = launch("kube-scheduler", [
        b("kube-scheduler"),
        f"--kubeconfig={kc['scheduler']}",
        f"--authentication-kubeconfig={kc['scheduler']}",
        f"--authorization-kubeconfig={kc['scheduler']}",
        "--bind-address=127.0.0.1", f"--secure-port={sched_port}", "--leader-elect=false",
        f"--client-ca-file={ca.cert}", "--profiling=false", "--v=1",
    ])
    kwok = None
    if fake_nodes or not node:
        kwok = launch("kwok", [
            b("kwok"), f"--kubeconfig={kc['kwok']}", f"--config={workdir / 'kwok.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={kwok_stages.FAKE_NODE_ANNOTATION}={kwok_stages.FAKE_NODE_ANNOTATION_VALUE}",
            f"--cidr={POD_CIDR}", f"--node-ip={FAKE_NODE_IP}", "--node-lease-duration-seconds=40",
        ])
    for fake in fake_nodes:
        status, body = api.request("POST", "/api/v1/nodes", kwok_stages.fake_node_manifest(fake))
        if status not in (200, 201, 409):
            raise ClusterError(f"creating fake node {fake} failed: HTTP {status} {body[:500]}")

    def healthz(port: int) -> int:
        if node:  # these ports exist only inside the namespace
            return netns.call_in(node.netns_path, lambda: _insecure_healthz(port), timeout=10)
        return _insecure_healthz(port)

    wait("kube-controller-manager /healthz", lambda: healthz(cm_port) == 200, cm)
    wait("kube-scheduler /healthz", lambda: healthz(sched_port) == 200, sched)
    wait(
        "the default ServiceAccount (controller-manager's serviceaccount controller)",
        lambda: api.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
        cm,
    )
    phase("controllers")

    def nodes_ready() -> bool:
        for fake in fake_nodes:
            status, body = api.request("GET", f"/api/v1/nodes/{fake}")
            if status != 200:
                return False
            conds = json.loads(body).get("status", {}).get("conditions") or []
            if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                return False
        return True

    if fake_nodes:
        wait(f"fake node(s) {', '.join(fake_nodes)} Ready (kwok)", nodes_ready, kwok)
        phase("nodes")
    return phases
