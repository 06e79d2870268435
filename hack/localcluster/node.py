"""A real node for the local cluster: containerd, the kubelet and kube-proxy in a network and
mount namespace of the cluster's own, plus CoreDNS and local-path-provisioner as pods.

One cluster, one namespace pair, held by holder.py:

- network: lo, a veth pair with NODE_IP (the API server binds and advertises it; the kubelet
  and kube-proxy use it), the pod bridge cni0 with POD_SUBNET, kube-proxy's iptables rules.
  Nothing routes out of it, so pods can only talk to the cluster. The host reaches the API
  server through forward.py on 127.0.0.1.
- mount: the cluster's directories bound over the fixed paths containerd 1.6 and the kubelet
  write whatever their configuration says (REDIRECTED), so two clusters never share them and
  every mount (overlay snapshots, pod volumes, netns bind mounts) ends with the namespace.
- cgroups: the kubelet's cgroupRoot is /mlflow-localcluster-<id> in every hierarchy, made and
  removed by us; pods' cgroups live below it.

Every process is started with `nsenter --net=... --mount=...` (not `ip netns exec`, which
mounts a fresh /sys that hides the cgroup mounts). Teardown kills, in order, kube-proxy and
the kubelet, every process in the cluster's cgroups (the pods), containerd, then whatever
still names the cluster's directory (the shims), and proves nothing is left: no process, no
cgroup, no mount (the namespaces die with their last process, iptables rules with them).
A record per node in <cache>/nodes/ lets a later start clean up after a test run that was
killed with no chance to stop (see cleanup_stale).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import netns, node_addons, node_build
from .build import bin_dir, cache_root
from .processes import Process, stop_all, tail

if TYPE_CHECKING:
    from .cluster import Cluster

NODE_NAME = "localcluster-node"
NODE_IP = "10.200.0.2"
NODE_ADDRESS = f"{NODE_IP}/24"
POD_SUBNET = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
CLUSTER_CIDR = "10.244.0.0/16"
APISERVER_PORT = 6443
CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
CNI_BIN_DIR = "/usr/lib/cni"
CGROUP_FS = Path("/sys/fs/cgroup")
CGROUP_PREFIX = "mlflow-localcluster-"

# Host paths written by containerd 1.6 / the kubelet / the CNI plugins regardless of their
# configuration (REAL-NODE-NOTES.md): each gets a directory of the cluster bound over it.
REDIRECTED = ("/run/containerd", "/var/lib/kubelet", "/var/lib/cni", "/var/log/pods", "/var/log/containers")

Log = Callable[[str], None]


class NodeError(RuntimeError):
    """The node could not be set up, started or stopped; the message says why."""


def records_dir() -> Path:
    return cache_root() / "nodes"


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int | None, start: str | None) -> bool:
    return bool(pid) and _start_time(pid) == start


def requirements() -> list[str]:
    """What this machine lacks for a real node (empty when it can run one)."""
    out = []
    if os.geteuid() != 0:
        out.append("root (network and mount namespaces, cgroups, containerd)")
    for exe, pkg in ((CONTAINERD, "containerd"), (CTR, "containerd"), ("/usr/sbin/runc", "runc"),
                     (f"{CNI_BIN_DIR}/bridge", "containernetworking-plugins"), ("/usr/sbin/iptables", "iptables"),
                     ("/usr/bin/nsenter", "util-linux"), ("/usr/bin/unshare", "util-linux"), ("/usr/sbin/ip", "iproute2")):
        if not os.access(exe, os.X_OK):
            out.append(f"{exe} (Debian package {pkg}; hack/system-deps installs it)")
    if not (CGROUP_FS / "memory").is_dir() and not (CGROUP_FS / "cgroup.controllers").is_file():
        out.append(f"cgroups mounted at {CGROUP_FS}")
    return out


def _hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, name=systemd, the unified v2 mount)."""
    if (CGROUP_FS / "cgroup.controllers").is_file():  # pure cgroup v2
        return [CGROUP_FS]
    seen, out = set(), []
    for p in sorted(CGROUP_FS.iterdir()):
        real = p.resolve()
        if real in seen or not (real / "cgroup.procs").is_file():
            continue
        seen.add(real)
        out.append(real)
    return out


def _cgroup_pids(root_name: str) -> list[int]:
    pids: set[int] = set()
    for h in _hierarchies():
        base = h / root_name
        if not base.is_dir():
            continue
        for procs in base.rglob("cgroup.procs"):
            try:
                pids.update(int(x) for x in procs.read_text().split())
            except OSError:
                continue
    return sorted(pids)


def _remove_cgroups(root_name: str) -> list[str]:
    """rmdir the tree below /<root_name> in every hierarchy, deepest first; returns what stayed."""
    left = []
    for h in _hierarchies():
        base = h / root_name
        if not base.is_dir():
            continue
        dirs = sorted((d for d in base.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True)
        for d in [*dirs, base]:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            if d.exists():
                left.append(str(d))
    return left


def _pids_naming(marker: str) -> list[int]:
    """Processes whose command line contains `marker` (a cluster directory + '/')."""
    me = os.getpid()
    out = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                out.append(int(entry.name))
        except OSError:
            continue
    return out


def _kill(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _sweep(workdir: Path, cgroup_root: str, timeout: float = 15) -> list[int]:
    """SIGKILL every process of this node (in its cgroups, or naming its directory) until none
    is left; returns the pids still there at the timeout."""
    deadline = time.monotonic() + timeout
    marker = str(workdir) + "/"
    while True:
        pids = sorted(set(_cgroup_pids(cgroup_root)) | set(_pids_naming(marker)))
        pids = [p for p in pids if not _is_zombie(p)]
        if not pids or time.monotonic() > deadline:
            return pids
        _kill(pids)
        time.sleep(0.1)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    out = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4]
            if point.startswith(prefix) or point == str(path):
                out.append(point)
    except OSError:
        pass
    return out


def cleanup_stale(log: Log) -> list[str]:
    """Remove what nodes of dead test runs left (processes, cgroups, directories). A node is
    stale when the process that started it is gone (or, for `hack/cluster up --node`, its
    namespace holder is). Only what a record names is touched. Returns the node ids cleaned."""
    cleaned = []
    d = records_dir()
    if not d.is_dir():
        return cleaned
    for rec_file in sorted(d.glob("*.json")):
        try:
            rec = json.loads(rec_file.read_text())
        except (OSError, ValueError):
            continue
        if rec.get("detached"):
            live = _alive(rec.get("holder_pid"), rec.get("holder_start"))
        else:
            live = _alive(rec.get("owner_pid"), rec.get("owner_start"))
        if live:
            continue
        workdir, cgroup_root = Path(rec["workdir"]), rec["cgroup_root"]
        if not cgroup_root.startswith(CGROUP_PREFIX):
            continue  # never touch a cgroup we did not name
        left = _sweep(workdir, cgroup_root)
        if left:
            log(f"stale node {rec['id']}: processes {left} did not die; leaving its record")
            continue
        remaining = _remove_cgroups(cgroup_root)
        if remaining:
            log(f"stale node {rec['id']}: cgroups not removable: {remaining[:3]}")
            continue
        if workdir.name.startswith("localcluster-"):
            shutil.rmtree(workdir, ignore_errors=True)
        rec_file.unlink(missing_ok=True)
        cleaned.append(rec["id"])
    if cleaned:
        log(f"cleaned up {len(cleaned)} stale node(s) of earlier runs: {', '.join(cleaned)}")
    return cleaned


class Node:
    """The node of one cluster. Made by localcluster.start(node=True) as `cluster.node`.

    name, ip: the Node object's name and InternalIP. load_image(path) imports an OCI archive
    into its containerd. netns_path: /proc/<holder>/ns/net (for netns.call_in)."""

    def __init__(self, workdir: Path, *, detached: bool, log: Log, node_id: str | None = None):
        self.workdir = workdir
        self.dir = workdir / "node"
        self.detached = detached
        self.log = log
        self.id = node_id or secrets.token_hex(4)
        self.name = NODE_NAME
        self.ip = NODE_IP
        self.cgroup_root = f"{CGROUP_PREFIX}{self.id}"
        self.holder: Process | None = None
        self.processes: list[Process] = []  # containerd, kubelet, kube-proxy
        self.images: dict[str, list[str]] = {}
        self._stopped = False

    # ------------------------------------------------------------ paths
    @property
    def netns_path(self) -> str:
        return f"/proc/{self.holder.pid}/ns/net"

    @property
    def mntns_path(self) -> str:
        return f"/proc/{self.holder.pid}/ns/mnt"

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def volume_dir(self) -> Path:
        return self.dir / "volumes"

    @property
    def record_file(self) -> Path:
        return records_dir() / f"{self.id}.json"

    def nsenter(self, *argv: str, mount: bool = True) -> list[str]:
        """argv run inside the node's namespaces."""
        ns = [f"--net={self.netns_path}"] + ([f"--mount={self.mntns_path}"] if mount else [])
        return ["/usr/bin/nsenter", *ns, "--", *argv]

    # ------------------------------------------------------------ namespaces
    def create_namespaces(self) -> None:
        missing = requirements()
        if missing:
            raise NodeError("this machine cannot run a real node; missing: " + "; ".join(missing))
        cleanup_stale(self.log)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_record()
        self._make_cgroups()
        binds = []
        for target in REDIRECTED:
            source = self.dir / "fs" / target.strip("/").replace("/", "-")
            source.mkdir(parents=True, exist_ok=True)
            # The mount point must exist on the host; it stays there, empty (removing it while
            # another cluster has a mount on it would detach that mount).
            Path(target).mkdir(parents=True, exist_ok=True)
            binds.append((str(source), target))
        ready = self.dir / "holder.ready"
        cfg = {
            "interface": "lcnode0", "peer": "lcpeer0", "address": NODE_ADDRESS,
            "sysctls": {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"},
            "binds": binds, "ready_file": str(ready),
        }
        (self.dir / "holder.json").write_text(json.dumps(cfg, indent=2))
        self.holder = Process.start(
            "node-namespaces",
            ["/usr/bin/unshare", "--net", "--mount", "--propagation", "private", "--",
             sys.executable, "-S", str(Path(__file__).with_name("holder.py")), str(self.dir / "holder.json")],
            self.dir / "logs" / "node-namespaces.log", die_with_parent=not self.detached, exe=sys.executable,
        )
        deadline = time.monotonic() + 20
        while not ready.is_file():
            if not self.holder.alive():
                raise NodeError(f"setting up the node's namespaces failed: {tail(self.holder.log)}")
            if time.monotonic() > deadline:
                raise NodeError(f"the node's namespaces were not ready within 20s: {tail(self.holder.log)}")
            time.sleep(0.02)
        self._write_record()

    def _write_record(self) -> None:
        rec = {
            "id": self.id, "workdir": str(self.workdir), "cgroup_root": self.cgroup_root, "detached": self.detached,
            "owner_pid": os.getpid(), "owner_start": _start_time(os.getpid()),
            "holder_pid": self.holder.pid if self.holder else None,
            "holder_start": _start_time(self.holder.pid) if self.holder else None,
        }
        self.record_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.record_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=2) + "\n")
        tmp.replace(self.record_file)

    def _make_cgroups(self) -> None:
        """The kubelet wants its cgroupRoot to exist in every hierarchy it uses."""
        for h in _hierarchies():
            d = h / self.cgroup_root
            d.mkdir(exist_ok=True)
            if (h / "cpuset.cpus").is_file() and (d / "cpuset.cpus").is_file():
                # A v1 cpuset cgroup starts empty; a cgroup with no cpus/mems takes no task.
                for f in ("cpuset.cpus", "cpuset.mems"):
                    if not (d / f).read_text().strip():
                        (d / f).write_text((h / f).read_text())

    # ------------------------------------------------------------ components
    def _launch(self, name: str, argv: list[str]) -> Process:
        # kube-proxy runs iptables-restore, the kubelet mount: whatever PATH the caller had.
        env = dict(os.environ, PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        p = Process.start(name, self.nsenter(*argv), self.dir / "logs" / f"{name}.log",
                          die_with_parent=not self.detached, exe=argv[0], env=env)
        self.processes.append(p)
        return p

    def start(self, cluster: "Cluster", timeout: float = 120) -> dict[str, float]:
        """containerd, images, kubelet, kube-proxy, then CoreDNS and the provisioner; returns
        the time each phase took."""
        phases: dict[str, float] = {}
        mark = time.monotonic()

        def phase(name: str) -> None:
            nonlocal mark
            phases[name] = time.monotonic() - mark
            mark = time.monotonic()

        deadline = time.monotonic() + timeout
        self._write_configs(cluster)
        containerd = self._launch("containerd", [CONTAINERD, "--config", str(self.dir / "containerd" / "config.toml")])
        self._wait("containerd's socket", lambda: self._ctr("version", check=False).returncode == 0, containerd, deadline)
        phase("containerd")
        for name, archive in node_build.ensure(self.log).items():
            if name in node_build.PRELOADED:
                self.load_image(archive)
        phase("images")
        kubelet = self._launch("kubelet", [
            str(bin_dir() / "kubelet"), f"--config={self.dir / 'kubelet.yaml'}",
            f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}", f"--hostname-override={self.name}",
            f"--node-ip={self.ip}", "--v=1",
        ])
        self._launch("kube-proxy", [str(bin_dir() / "kube-proxy"), f"--config={self.dir / 'kube-proxy.yaml'}", "--v=1"])
        self._wait(f"node {self.name} Ready", lambda: self._node_ready(cluster), kubelet, deadline)
        phase("kubelet")
        cluster.kubectl("apply", "--server-side", "-f", "-", input=node_addons.manifest_list(
            node_addons.coredns() + node_addons.local_path_provisioner(str(self.volume_dir))))
        self._wait_rollout(cluster, "kube-system", "coredns", deadline)
        self._wait_rollout(cluster, node_addons.PROVISIONER_NAMESPACE, "local-path-provisioner", deadline)
        phase("addons")
        return phases

    def _wait(self, what: str, cond: Callable[[], bool], relevant: Process, deadline: float) -> None:
        while True:
            for p in [self.holder, *self.processes]:
                if not p.alive():
                    raise NodeError(f"{p.name} exited (code {p.exit_code()}) while waiting for {what}; last lines of {p.log}:\n{tail(p.log)}")
            if cond():
                return
            if time.monotonic() > deadline:
                raise NodeError(f"timed out waiting for {what}; last lines of {relevant.log}:\n{tail(relevant.log)}")
            time.sleep(0.2)

    def _wait_rollout(self, cluster: "Cluster", ns: str, name: str, deadline: float) -> None:
        left = max(5, deadline - time.monotonic())
        proc = cluster.kubectl("-n", ns, "rollout", "status", f"deployment/{name}", f"--timeout={left:.0f}s",
                               check=False, timeout=left + 10)
        if proc.returncode != 0:
            pods = cluster.kubectl("-n", ns, "get", "pods", "-o", "wide", check=False).stdout
            events = cluster.kubectl("-n", ns, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout
            raise NodeError(f"deployment {ns}/{name} did not become available: {proc.stderr.strip()}\n{pods}\n"
                            f"{events[-3000:]}\nkubelet:\n{tail(self.dir / 'logs' / 'kubelet.log', 15)}")

    def _node_ready(self, cluster: "Cluster") -> bool:
        proc = cluster.kubectl("get", "node", self.name, "-o", "json", check=False, timeout=10)
        if proc.returncode != 0:
            return False
        conds = json.loads(proc.stdout).get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)

    def _ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([CTR, "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc

    def load_image(self, archive: str | Path) -> list[str]:
        """Import an OCI archive (`buildah push IMG oci-archive:FILE:REF`) into the node's
        containerd, where pods with imagePullPolicy Never/IfNotPresent find it by REF.
        Returns the image names imported."""
        path = Path(archive)
        if not path.is_file():
            raise NodeError(f"image archive {path} does not exist")
        before = set(self.image_names())
        proc = self._ctr("images", "import", "--platform", "linux/amd64", str(path), timeout=600)
        names = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("unpacking ") and len(ln.split()) > 1]
        if not names:  # older/newer ctr output: diff the image list instead
            names = sorted(set(self.image_names()) - before)
        if not names:
            raise NodeError(f"ctr imported no image from {path}: {proc.stdout.strip()} {proc.stderr.strip()}")
        self.images[str(path)] = names
        return names

    def tag_image(self, source: str, target: str) -> None:
        """Give an imported image a second name (`ctr images tag`), as a mirror registry's copy of it
        would be named; pods find it by either name with imagePullPolicy Never or IfNotPresent."""
        self._ctr("images", "tag", "--force", source, target)

    def image_names(self) -> list[str]:
        """Names of the images in the node's containerd (namespace k8s.io), digests excluded."""
        out = self._ctr("images", "list", "--quiet").stdout.split()
        return [n for n in out if not n.startswith("sha256:")]

    def memory(self) -> dict[str, int]:
        """Resident memory (bytes) of containerd, the kubelet and kube-proxy."""
        out = {}
        for p in self.processes:
            try:
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[p.name] = int(line.split()[1]) * 1024
            except OSError:
                continue
        return out

    # ------------------------------------------------------------ configuration
    def _write_configs(self, cluster: "Cluster") -> None:
        d = self.dir
        ca = cluster.ca
        server = f"https://{self.ip}:{APISERVER_PORT}"
        from . import kubeconfig

        for name, cn, orgs in (("kubelet", f"system:node:{self.name}", ("system:nodes",)),
                               ("kube-proxy", "system:kube-proxy", ())):
            pair = ca.issue(f"node-{name}", cn, orgs)
            kubeconfig.write(d / f"{name}.kubeconfig",
                             kubeconfig.build(server, ca_file=ca.cert, cert_file=pair.cert, key_file=pair.key, user_name=cn))
        (d / "containerd").mkdir(exist_ok=True)
        (d / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        self.volume_dir.mkdir(exist_ok=True)
        (d / "containerd" / "config.toml").write_text(f"""\
version = 2
root = "{d / 'containerd' / 'root'}"
state = "{d / 'containerd' / 'state'}"

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{self.containerd_socket}.ttrpc"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'containerd' / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{node_build.image_ref('pause')}"
  # root here lacks CAP_SYS_RESOURCE: runc may not lower oom_score_adj below its own.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d / 'cni' / 'net.d'}"
    max_conf_num = 1
""")
        (d / "cni" / "net.d" / "10-localcluster.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0",
            "name": "localcluster",
            "plugins": [
                {
                    "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                             "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(d / "cni" / "ipam")},
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }, indent=2))
        # Pods with dnsPolicy Default get this: no resolver outside the cluster.
        (d / "resolv.conf").write_text("# localcluster: pods resolve cluster names only (CoreDNS)\nnameserver 127.0.0.1\n")
        (d / "kubelet.yaml").write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(ca.cert)}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_root}",
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            # cgroup v1 here: 1.35 refuses it unless told (deprecated upstream: see README).
            "failCgroupV1": False,
            "failSwapOn": False,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                             "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "clusterDNS": [node_addons.DNS_SERVICE_IP],
            "clusterDomain": node_addons.CLUSTER_DOMAIN,
            "resolvConf": str(d / "resolv.conf"),
            "volumePluginDir": str(d / "volume-plugins"),
            "serializeImagePulls": False,
            "maxPods": 110,
            "podPidsLimit": 4096,
            "protectKernelDefaults": False,
            "shutdownGracePeriod": "0s",
            "nodeStatusUpdateFrequency": "5s",
            "fileCheckFrequency": "5s",
            "syncFrequency": "10s",
        }, indent=2))
        (d / "kube-proxy.yaml").write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(d / "kube-proxy.kubeconfig")},
            "mode": "iptables",
            "clusterCIDR": CLUSTER_CIDR,
            "hostnameOverride": self.name,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # No global sysctls: conntrack limits and timeouts stay as the host has them.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "nodePortAddresses": [f"{self.ip}/32"],
        }, indent=2))

    # ------------------------------------------------------------ teardown
    def stop_components(self) -> None:
        """kube-proxy and the kubelet, the pods (SIGKILL by cgroup), containerd, the shims."""
        by_name = {p.name: p for p in self.processes}
        stop_all([p for p in (by_name.get("kube-proxy"), by_name.get("kubelet")) if p], timeout=10)
        _kill(_cgroup_pids(self.cgroup_root))
        if "containerd" in by_name:
            stop_all([by_name["containerd"]], timeout=10)

    def destroy(self) -> None:
        """After the control plane stopped: every process left, the holder, cgroups; then check
        that no process, mount or cgroup of this node remains (raises NodeError if one does)."""
        if self._stopped:
            return
        self._stopped = True
        problems = []
        _sweep(self.workdir, self.cgroup_root)
        if self.holder is not None:
            stop_all([self.holder], timeout=5)
        left = _sweep(self.workdir, self.cgroup_root)
        if left:
            problems.append(f"processes still running: {left}")
        cg = _remove_cgroups(self.cgroup_root)
        if cg:
            problems.append(f"cgroups not removable: {cg[:5]}")
        mounts = _mounts_under(self.workdir)
        if mounts:
            problems.append(f"mounts left on the host: {mounts[:5]}")
        if not problems:
            self.record_file.unlink(missing_ok=True)
        else:
            raise NodeError("node teardown incomplete: " + "; ".join(problems))

    # ------------------------------------------------------------ state (hack/cluster up --node)
    def to_state(self) -> dict:
        return {"id": self.id, "workdir": str(self.workdir), "holder": self.holder.to_state() if self.holder else None,
                "processes": [p.to_state() for p in self.processes]}

    @classmethod
    def from_state(cls, state: dict, log: Log) -> "Node":
        n = cls(Path(state["workdir"]), detached=True, log=log, node_id=state["id"])
        n.holder = Process.from_state(state["holder"]) if state.get("holder") else None
        n.processes = [Process.from_state(p) for p in state["processes"]]
        return n

    def alive(self) -> dict[str, bool]:
        procs = ([self.holder] if self.holder else []) + self.processes
        return {p.name: p.alive() for p in procs}

