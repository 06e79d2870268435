"""A real ingress controller and Gateway API implementation for the real node: Traefik v3, opt-in.

`start(node=True, ingress=True)`, `hack/cluster up --node --ingress`, or the pytest fixture
``node_ingress`` install it; clusters that do not ask for it build and run nothing of it.

One Traefik binary serves both APIs the operator renders, unchanged:

- Ingress through Traefik's ``kubernetesIngressNGINX`` provider, which reads ingress-nginx's
  annotations: it owns IngressClass ``nginx`` (controller ``k8s.io/ingress-nginx``, ingress-nginx's
  own), so a TrackingServer written for ingress-nginx is served as it is.
- HTTPRoute through its ``kubernetesGateway`` provider: GatewayClass ``traefik``, Gateway
  ``traefik/mlflow`` (HTTP listener on port 8000, routes from every namespace).

Build (cached like the other binaries, ``bin/<kubernetes version>/traefik`` + stamp): the module
github.com/traefik/traefik/v3 at versions.TRAEFIK, copied to build/traefik-<v>/src and built
there with its own go.mod/go.sum, after the edits the module proxy forces (each asserted, so a
version bump that changes them fails loudly instead of building something else):

- the nested module ``github.com/traefik/traefik/dynamic/ext`` (replaced by ``./pkg/config/dynamic/ext``)
  is not in the module zip: its open-source content, four empty extension types, is written back;
- the ``containous/go-http-auth`` fork is not served: upstream ``abbot/go-http-auth v0.4.0``
  lacks two of its additions, so in this build Traefik's basicAuth middleware refuses every
  password (no htpasswd check) and digestAuth answers a stale nonce as a failure (the tests use
  neither: MLflow's own basic-auth is the server's);
- lego's DNS-01 provider registry needs SDKs the proxy does not serve: ACME DNS challenges are
  left out (``NewDNSChallengeProviderByName`` becomes an error). HTTP-01/TLS-ALPN stay.

The image (``localhost/localcluster/traefik:<v>``) is the binary in ``buildah from scratch``, run
as UID 65532 under the restricted profile. The pod listens on 8000 (HTTP) and 8443 (HTTPS; no
NET_BIND_SERVICE) with hostPorts 80 and 443 on the node address 10.200.0.2, inside the cluster's
network namespace; the host reaches them through forward.py on free loopback ports
(``NodeIngress.port``, ``NodeIngress.tls_port``). Nothing listens anywhere else, and Traefik's
version check and usage statistics are off (no traffic out).

HTTPS: the ingress-nginx provider serves an Ingress's ``spec.tls`` on the ``websecure`` entry
point with the certificate of the Secret it names (and, as ingress-nginx does by default, answers
plain HTTP for that host with a 308 to https://); a Gateway listener of protocol HTTPS on port
8443 terminates TLS with its ``certificateRefs``. The installed Gateway ``traefik/mlflow`` has the
HTTP listener only: a certificate is a team's, so a test that wants HTTPS through the Gateway API
adds a Gateway of its own with the Secret beside it.

Static settings a Traefik install needs for MLflow, which no Ingress or HTTPRoute can set (the
README says so): the entry point's ``respondingTimeouts.readTimeout`` (Traefik's default 60 s cuts
any upload that takes longer to send) is 0 here, so the routes' own timeouts decide. Access logs
are JSON on stdout: ``NodeIngress.access_log()`` tells which backend pod served each request.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import node_build, versions
from .build import BuildError, Log, _default_log, _go, _go_env, _mod_download, _run_logged, bin_dir, cache_root, file_lock
from .processes import Process, tail

NAMESPACE = "traefik"
INGRESS_CLASS = "nginx"
INGRESS_NGINX_CONTROLLER = "k8s.io/ingress-nginx"
GATEWAY_CLASS = "traefik"
GATEWAY_CONTROLLER = "traefik.io/gateway-controller"
GATEWAY = "mlflow"
ENTRYPOINT_PORT = 8000  # the Gateway listener's port must be an entry point's port in Traefik
HOST_PORT = 80
TLS_ENTRYPOINT_PORT = 8443  # an HTTPS Gateway listener names this port
TLS_HOST_PORT = 443
PING_PORT = 8082
NAME = "traefik"
MODULE = "github.com/traefik/traefik/v3"

_EXT_GO = """\
// Package ext holds the extension points of Traefik's dynamic configuration: empty in an
// open-source build. Written by hack/localcluster/ingress_controller.py, because this nested
// module is not part of the github.com/traefik/traefik/v3 module zip.
package ext

type HTTP struct{}

type Router struct{}

type RouterIng struct{}

func (RouterIng) ToRouter() Router { return Router{} }
"""
_HTTP_AUTH_FORK = "github.com/abbot/go-http-auth => github.com/containous/go-http-auth "
_HTTP_AUTH_UPSTREAM = "github.com/abbot/go-http-auth => github.com/abbot/go-http-auth v0.4.0"
# The fork adds CheckSecret (htpasswd hashes) and RequireAuthStale to upstream's API.
_BASIC_CHECK = "checkSecret:       goauth.CheckSecret,"
_BASIC_REFUSE = "checkSecret:       func(string, string) bool { return false }, // no htpasswd check upstream: refuse"
_DIGEST_STALE = "d.auth.RequireAuthStale(rw, req)"
_DIGEST_PLAIN = "d.auth.RequireAuth(rw, req)"
_DNS_IMPORT = '\t"github.com/go-acme/lego/v5/providers/dns"\n'
_DNS_CALL = "provider, err = dns.NewDNSChallengeProviderByName(p.DNSChallenge.Provider)"
_DNS_REFUSED = ('err = fmt.Errorf("ACME DNS challenge provider %q: not built into this binary '
                '(hack/localcluster/ingress_controller.py)", p.DNSChallenge.Provider)')


# ---------------------------------------------------------------- build
def _stamp() -> Path:
    return bin_dir() / f".{NAME}.version"


def missing() -> list[str]:
    out = []
    if not ((bin_dir() / NAME).is_file() and _stamp().is_file() and _stamp().read_text().strip() == versions.TRAEFIK):
        out.append(NAME)
    stamp = node_build.image_dir() / f".{NAME}.version"
    if NAME in out or not (node_build.image_archive(NAME).is_file() and stamp.is_file()
                           and stamp.read_text().strip() == node_build._image_expected(NAME)):
        out.append(f"image:{NAME}")
    return out


def _patch(src: Path) -> None:
    """The edits the module docstring explains; each asserts what it replaces."""
    ext = src / "pkg" / "config" / "dynamic" / "ext"
    ext.mkdir(parents=True, exist_ok=True)
    (ext / "go.mod").write_text("module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24.0\n")
    (ext / "ext.go").write_text(_EXT_GO)

    gomod = src / "go.mod"
    lines = gomod.read_text().splitlines(keepends=True)
    fork = [i for i, ln in enumerate(lines) if ln.strip().startswith(_HTTP_AUTH_FORK)]
    if len(fork) != 1:
        raise BuildError(f"traefik {versions.TRAEFIK}: go.mod no longer replaces go-http-auth by the containous fork; "
                         "review hack/localcluster/ingress_controller.py's edits")
    lines[fork[0]] = "\t" + _HTTP_AUTH_UPSTREAM + "\n"
    gomod.write_text("".join(lines))

    for rel, old, new in (("basic_auth.go", _BASIC_CHECK, _BASIC_REFUSE), ("digest_auth.go", _DIGEST_STALE, _DIGEST_PLAIN)):
        f = src / "pkg" / "middlewares" / "auth" / rel
        text = f.read_text()
        if text.count(old) != 1:
            raise BuildError(f"traefik {versions.TRAEFIK}: pkg/middlewares/auth/{rel} changed; "
                             "review hack/localcluster/ingress_controller.py's edits")
        f.write_text(text.replace(old, new))

    acme = src / "pkg" / "provider" / "acme" / "provider.go"
    text = acme.read_text()
    if _DNS_IMPORT not in text or _DNS_CALL not in text or '"fmt"' not in text:
        raise BuildError(f"traefik {versions.TRAEFIK}: pkg/provider/acme/provider.go changed; "
                         "review hack/localcluster/ingress_controller.py's edits")
    acme.write_text(text.replace(_DNS_IMPORT, "").replace(_DNS_CALL, _DNS_REFUSED))


def _build_binary(log: Log) -> None:
    work = cache_root() / "build" / f"traefik-{versions.TRAEFIK}"
    work.mkdir(parents=True, exist_ok=True)
    module_dir = Path(_mod_download(MODULE, versions.TRAEFIK, work.parent)["Dir"])
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    # The docs and integration tests are half the module and not part of the binary.
    shutil.copytree(module_dir, src, ignore=shutil.ignore_patterns("docs", "integration"))
    for root, dirs, files in os.walk(src):
        for n in dirs + files:
            p = Path(root) / n
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o200)
    _patch(src)
    out = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    try:
        # niced: a cold build is ~1,700 packages, on machines whose cores other work shares.
        nice = [shutil.which("nice"), "-n", "10"] if shutil.which("nice") else []
        cmd = [*nice, _go(), "build", "-p", os.environ.get("LOCALCLUSTER_GO_BUILD_P", "2"), "-trimpath",
               "-ldflags", f"-s -w -X github.com/traefik/traefik/v3/pkg/version.Version={versions.TRAEFIK}",
               "-o", str(out / NAME), "./cmd/traefik"]
        _run_logged(cmd, src, work / "build.log", _go_env(), f"traefik {versions.TRAEFIK}", log)
        node_build._install_binary(out / NAME, NAME, versions.TRAEFIK)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def ensure(log: Log = _default_log) -> Path:
    """Build the binary and the image when missing; returns the image's OCI archive."""
    if missing():
        with file_lock(cache_root() / "bin" / ".build.lock"):
            todo = missing()
            if NAME in todo:
                t = time.monotonic()
                log(f"go build traefik {versions.TRAEFIK} ...")
                _build_binary(log)
                log(f"built traefik in {time.monotonic() - t:.0f}s")
            if missing():
                log_file = cache_root() / "build" / "node-images" / "build.log"
                log_file.parent.mkdir(parents=True, exist_ok=True)
                t = time.monotonic()
                node_build._build_image(NAME, {"/traefik": bin_dir() / NAME}, {},
                                        ["--entrypoint", '["/traefik"]', "--user", "65532:65532"], log_file)
                log(f"built image {node_build.image_ref(NAME)} in {time.monotonic() - t:.1f}s")
            still = missing()
            if still:
                raise BuildError(f"still missing after the traefik build: {', '.join(still)}")
    return node_build.image_archive(NAME)


# ---------------------------------------------------------------- manifests
def args() -> list[str]:
    return [
        "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false",
        f"--entryPoints.web.address=:{ENTRYPOINT_PORT}",
        # Traefik reads a whole request, body included, within this (default 60s): an upload
        # that takes longer is cut whatever the route says. 0: the routes' timeouts decide.
        "--entryPoints.web.transport.respondingTimeouts.readTimeout=0",
        f"--entryPoints.websecure.address=:{TLS_ENTRYPOINT_PORT}",
        "--entryPoints.websecure.transport.respondingTimeouts.readTimeout=0",
        "--entryPoints.websecure.http.tls=true",
        f"--entryPoints.ping.address=:{PING_PORT}", "--ping.entryPoint=ping",
        "--providers.kubernetesIngressNGINX=true",
        f"--providers.kubernetesIngressNGINX.ingressClass={INGRESS_CLASS}",
        f"--providers.kubernetesIngressNGINX.controllerClass={INGRESS_NGINX_CONTROLLER}",
        # An Ingress's plain-HTTP routers (and the redirect of a TLS host) on `web`, its TLS
        # routers on `websecure`; without these every entry point would get both.
        "--providers.kubernetesIngressNGINX.httpEntryPoint=web",
        "--providers.kubernetesIngressNGINX.httpsEntryPoint=websecure",
        "--providers.kubernetesGateway=true",
        "--accessLog=true", "--accessLog.format=json",
        "--log.level=INFO",
    ]


def manifests() -> list[dict]:
    labels = {"app.kubernetes.io/name": NAME}
    restricted = {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }
    read = ["get", "list", "watch"]
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": NAMESPACE}},
        {
            # What the two providers read and the status they write (Traefik's own RBAC for
            # them, without the CRD provider's traefik.io resources, which are not installed).
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": NAME},
            "rules": [
                {"apiGroups": [""], "resources": ["services", "endpoints", "secrets", "configmaps", "namespaces", "pods"],
                 "verbs": read},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"], "verbs": read},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update"]},
                {"apiGroups": ["gateway.networking.k8s.io"],
                 "resources": ["gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants",
                               "backendtlspolicies", "tcproutes", "tlsroutes", "listenersets"],
                 "verbs": read},
                {"apiGroups": ["gateway.networking.k8s.io"],
                 "resources": ["gatewayclasses/status", "gateways/status", "httproutes/status", "grpcroutes/status",
                               "backendtlspolicies/status", "tcproutes/status", "tlsroutes/status", "listenersets/status"],
                 "verbs": ["update", "patch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": NAME},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": INGRESS_CLASS},
            "spec": {"controller": INGRESS_NGINX_CONTROLLER},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": GATEWAY_CONTROLLER},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": GATEWAY, "namespace": NAMESPACE},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [{"name": "http", "protocol": "HTTP", "port": ENTRYPOINT_PORT,
                               "allowedRoutes": {"namespaces": {"from": "All"}}}],
            },
        },
        {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},  # one pod holds the hostPort
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": NAME,
                        "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": True,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": NAME,
                            "image": node_build.image_ref(NAME),
                            "imagePullPolicy": "Never",
                            "args": args(),
                            "ports": [
                                {"name": "web", "containerPort": ENTRYPOINT_PORT, "hostPort": HOST_PORT, "protocol": "TCP"},
                                {"name": "websecure", "containerPort": TLS_ENTRYPOINT_PORT, "hostPort": TLS_HOST_PORT,
                                 "protocol": "TCP"},
                                {"name": "ping", "containerPort": PING_PORT, "protocol": "TCP"},
                            ],
                            "readinessProbe": {"httpGet": {"path": "/ping", "port": PING_PORT}, "periodSeconds": 2},
                            "livenessProbe": {"httpGet": {"path": "/ping", "port": PING_PORT}, "periodSeconds": 10,
                                              "failureThreshold": 5},
                            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                            "securityContext": restricted,
                        }],
                        # Request buffering (when an Ingress turns it on) spools bodies here.
                        "volumes": [{"name": "tmp", "emptyDir": {}}],
                    },
                },
            },
        },
    ]


# ---------------------------------------------------------------- running
@dataclass
class NodeIngress:
    """The running controller: `port` on 127.0.0.1 reaches its web entry point (node port 80),
    `tls_port` its websecure entry point (node port 443)."""

    cluster: object
    port: int
    forwarder: Process
    tls_port: int
    tls_forwarder: Process

    ingress_class = INGRESS_CLASS
    gateway = {"name": GATEWAY, "namespace": NAMESPACE}
    gateway_class = GATEWAY_CLASS
    tls_entrypoint_port = TLS_ENTRYPOINT_PORT  # what an HTTPS Gateway listener names
    version = versions.TRAEFIK

    def logs(self, since_seconds: int | None = None) -> str:
        extra = [f"--since={since_seconds}s"] if since_seconds else []
        return self.cluster.kubectl("logs", "-n", NAMESPACE, f"deployment/{NAME}", *extra, check=False).stdout

    def access_log(self, since_seconds: int | None = None) -> list[dict]:
        """Traefik's JSON access log lines (RequestHost, RequestPath, DownstreamStatus,
        OriginStatus, ServiceAddr = the backend pod's ip:port, ...)."""
        out = []
        for line in self.logs(since_seconds).splitlines():
            if line.startswith("{") and '"RequestMethod"' in line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out


def install(cluster, log: Log = _default_log, timeout: float = 180, port: int = 0) -> NodeIngress:
    """Build if needed, load the image into the node, install the Gateway API CRDs (standard) and
    Traefik; return once its pod is Ready and a loopback forwarder reaches its entry point (on
    127.0.0.1:`port`, by default a free port)."""
    if getattr(cluster, "node", None) is None:
        raise BuildError("the ingress controller runs on a real node: start(node=True, ingress=True)")
    t0 = time.monotonic()
    archive = ensure(log)
    cluster.load_image(archive)
    cluster.install_gateway_api_crds("standard")
    cluster.kubectl("apply", "--server-side", "--field-manager=localcluster", "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests()}))
    proc = cluster.kubectl("rollout", "status", "-n", NAMESPACE, f"deployment/{NAME}", f"--timeout={int(timeout)}s",
                           check=False, timeout=timeout + 30)
    if proc.returncode != 0:
        pods = cluster.kubectl("get", "pods,events", "-n", NAMESPACE, "-o", "wide", check=False).stdout
        logs = cluster.kubectl("logs", "-n", NAMESPACE, f"deployment/{NAME}", "--tail=30", check=False).stdout
        raise BuildError(f"traefik did not become ready: {proc.stderr.strip()}\n{pods}\n{logs}")
    port, fwd = _forward(cluster, "ingress-forward", HOST_PORT, port)
    tls_port, tls_fwd = _forward(cluster, "ingress-forward-tls", TLS_HOST_PORT)
    ingress = NodeIngress(cluster, port, fwd, tls_port, tls_fwd)
    log(f"traefik {versions.TRAEFIK} serving IngressClass {INGRESS_CLASS} and Gateway {NAMESPACE}/{GATEWAY} "
        f"on {cluster.node.ip}:{HOST_PORT} and :{TLS_HOST_PORT} (host: 127.0.0.1:{ingress.port} and "
        f":{ingress.tls_port}) in {time.monotonic() - t0:.1f}s")
    return ingress


def _forward(cluster, name: str, node_port: int, local_port: int = 0) -> tuple[int, Process]:
    """127.0.0.1:`local_port` (0: a free port) on the host relayed to `node_port` of the node's
    address (forward.py)."""
    workdir = Path(cluster.workdir)
    port_file = workdir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    fwd = Process.start(name, [
        sys.executable, "-S", str(Path(__file__).with_name("forward.py")), f"--netns={cluster.node.netns_path}",
        f"--target={cluster.node.ip}:{node_port}", f"--port-file={port_file}", f"--port={local_port}",
    ], workdir / "logs" / f"{name}.log", die_with_parent=not cluster.detached)
    cluster.processes.append(fwd)
    deadline = time.monotonic() + 10
    while not port_file.is_file():
        if not fwd.alive() or time.monotonic() > deadline:
            raise BuildError(f"the ingress forwarder ({name}) did not start: {tail(fwd.log)}")
        time.sleep(0.02)
    return int(port_file.read_text()), fwd
