"""Self-tests of the real node (hack/localcluster, start(node=True)): a test of the harness, not
of the product. Each proves one thing a user's cluster does: a restricted pod runs and is Ready
through its HTTP probe, kubectl logs/exec reach it, cluster DNS (CoreDNS) and Services
(kube-proxy) work, a pod reaches the API server with its token, a PVC binds through
local-path-provisioner and its data outlives the pod, and a stopped cluster leaves nothing:
no process, cgroup, mount or network namespace, also after its test process was SIGKILLed.

The test pods run Debian's busybox (the image the harness builds for the provisioner's helper).
"""
from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

import localcluster
from localcluster import netns, node as node_mod
from localcluster.node_addons import DNS_SERVICE_IP, STORAGE_CLASS
from localcluster.node_build import image_archive, image_ref

pytestmark = pytest.mark.node

BUSYBOX = image_ref("busybox")
RESTRICTED_POD = {
    "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


def apply(cluster, namespace: str, *objs: dict) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))


def pod(name: str, command: str, *, labels: dict | None = None, probe_port: int | None = None,
        volumes: list | None = None, mounts: list | None = None, token: bool = False) -> dict:
    container = {
        "name": "main", "image": BUSYBOX, "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", command],
        "securityContext": copy.deepcopy(RESTRICTED_CONTAINER),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *(mounts or [])],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
    }
    if probe_port:
        container["ports"] = [{"containerPort": probe_port, "name": "http"}]
        container["readinessProbe"] = {"httpGet": {"path": "/index.html", "port": probe_port}, "periodSeconds": 1}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "securityContext": copy.deepcopy(RESTRICTED_POD),
            "automountServiceAccountToken": token,
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}, *(volumes or [])],
        },
    }


def wait_ready(cluster, namespace: str, name: str, timeout: int = 90) -> None:
    proc = cluster.kubectl("-n", namespace, "wait", f"pod/{name}", "--for=condition=Ready", f"--timeout={timeout}s",
                           check=False, timeout=timeout + 15)
    if proc.returncode != 0:
        desc = cluster.kubectl("-n", namespace, "describe", f"pod/{name}", check=False).stdout
        pytest.fail(f"pod {name} not Ready within {timeout}s: {proc.stderr}\n{desc[-3000:]}")


def sh(cluster, namespace: str, name: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    return cluster.kubectl("-n", namespace, "exec", name, "--", "/bin/sh", "-c", command, check=check)


def restricted_namespace(cluster, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")


def test_node_is_real_and_ready(node_cluster):
    node = json.loads(node_cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert [n["metadata"]["name"] for n in node] == [node_cluster.node.name]
    info = node[0]["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://1."), info
    assert info["kubeletVersion"] == localcluster.KUBERNETES
    addresses = {a["type"]: a["address"] for a in node[0]["status"]["addresses"]}
    assert addresses["InternalIP"] == node_cluster.node.ip
    assert "kwok.x-k8s.io/node" not in (node[0]["metadata"].get("annotations") or {})
    # The `kubernetes` Service has the API server's real endpoint (lease reconciler).
    ep = json.loads(node_cluster.kubectl("get", "endpoints", "kubernetes", "-n", "default", "-o", "json").stdout)
    assert ep["subsets"][0]["addresses"][0]["ip"] == node_cluster.node.ip


def test_restricted_pod_ready_with_logs_and_exec(node_cluster, node_namespace):
    restricted_namespace(node_cluster, node_namespace)
    apply(node_cluster, node_namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"password": "s3cr3t-value"},
    }, pod(
        "web",
        "mkdir -p /tmp/www && echo hello-from-pod > /tmp/www/index.html && echo server starting && "
        "exec httpd -f -v -p 8080 -h /tmp/www",
        probe_port=8080,
        volumes=[{"name": "creds", "secret": {"secretName": "creds"}}],
        mounts=[{"name": "creds", "mountPath": "/etc/creds", "readOnly": True}],
    ))
    wait_ready(node_cluster, node_namespace, "web")
    assert node_cluster.kubectl("-n", node_namespace, "logs", "web").stdout.splitlines()[0] == "server starting"
    out = sh(node_cluster, node_namespace, "web",
             "id -u; id -g; grep CapEff /proc/1/status; grep Seccomp: /proc/1/status; grep NoNewPrivs /proc/1/status; "
             "cat /etc/creds/password; echo; touch /rootfs-write 2>&1 || echo root-read-only; "
             "stat -L -c %g /etc/creds/password").stdout.split("\n")
    assert out[0] == "10001" and out[1] == "10001", out
    assert out[2].split() == ["CapEff:", "0000000000000000"], out
    assert out[3].split() == ["Seccomp:", "2"], out  # filter mode: RuntimeDefault applied
    assert out[4].split() == ["NoNewPrivs:", "1"], out
    assert out[5] == "s3cr3t-value"
    assert "root-read-only" in "\n".join(out[6:]), out
    assert out[-2] == "10001", out  # fsGroup owns the Secret volume


def test_port_forward_from_the_host(node_cluster, node_namespace):
    """kubectl port-forward (host loopback -> API server -> kubelet -> containerd -> pod)."""
    apply(node_cluster, node_namespace, pod(
        "web", "mkdir -p /tmp/www && echo through-port-forward > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
        probe_port=8080))
    wait_ready(node_cluster, node_namespace, "web")
    pf = subprocess.Popen(
        [str(node_cluster.kubectl_path()), "--kubeconfig", str(node_cluster.kubeconfig), "-n", node_namespace,
         "port-forward", "pod/web", ":8080"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = pf.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+) -> 8080", line)
        assert m, f"unexpected port-forward output: {line!r} {pf.stderr.read() if pf.poll() is not None else ''}"
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/index.html", timeout=10) as resp:
            assert resp.read().decode().strip() == "through-port-forward"
    finally:
        pf.terminate()
        pf.wait(timeout=10)


def test_restricted_namespace_refuses_a_root_pod(node_cluster, node_namespace):
    """PodSecurity is in force on the node cluster too (the node runs only what admission let by)."""
    restricted_namespace(node_cluster, node_namespace)
    bad = pod("root", "sleep 1")
    del bad["spec"]["securityContext"]["runAsNonRoot"]
    bad["spec"]["securityContext"]["runAsUser"] = 0
    proc = node_cluster.kubectl("apply", "-n", node_namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert proc.returncode != 0 and "violates PodSecurity" in proc.stderr, proc.stderr


def test_dns_and_service_through_kube_proxy(node_cluster, node_namespace):
    ns = node_namespace
    apply(node_cluster, ns, pod(
        "backend", "mkdir -p /tmp/www && echo backend-says-hi > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
        labels={"app": "backend"}, probe_port=8080,
    ), {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "backend"},
        "spec": {"selector": {"app": "backend"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }, pod("client", "exec sleep 3600"))
    wait_ready(node_cluster, ns, "backend")
    wait_ready(node_cluster, ns, "client")
    cluster_ip = node_cluster.kubectl("-n", ns, "get", "service", "backend", "-o", "jsonpath={.spec.clusterIP}").stdout
    resolv = sh(node_cluster, ns, "client", "cat /etc/resolv.conf").stdout
    assert f"nameserver {DNS_SERVICE_IP}" in resolv and f"search {ns}.svc.cluster.local" in resolv, resolv
    fqdn = f"backend.{ns}.svc.cluster.local"
    answer = wait_for(f"{fqdn} resolved by CoreDNS", lambda: (lambda p: p.stdout if p.returncode == 0 and cluster_ip in p.stdout else None)(
        sh(node_cluster, ns, "client", f"nslookup {fqdn}", check=False)), timeout=30)
    assert cluster_ip in answer
    # By its short name (the search path), through the Service's virtual IP (kube-proxy's rules).
    # (busybox's static wget crashes with -T on a failed connect: `timeout` bounds it instead.)
    body = wait_for("the Service's answer through kube-proxy", lambda: (lambda p: p.stdout if "backend-says-hi" in p.stdout else None)(
        sh(node_cluster, ns, "client", "timeout 10 wget -q -O - http://backend/index.html", check=False)), timeout=30)
    assert body.strip() == "backend-says-hi"
    # No forwarding to any resolver outside the cluster: an outside name does not resolve.
    outside = sh(node_cluster, ns, "client", "nslookup example.com", check=False)
    assert outside.returncode != 0 or "Address" not in outside.stdout.split("example.com", 1)[-1], outside.stdout


def test_pod_reaches_the_api_server_with_its_token(node_cluster, node_namespace):
    """kubectl inside a restricted pod: in-cluster config, the `kubernetes` Service, the
    ServiceAccount token, the API server's certificate checked against the mounted CA."""
    ns = node_namespace
    restricted_namespace(node_cluster, ns)
    assert node_cluster.load_image(image_archive("kubectl")) == [image_ref("kubectl")]
    caller = pod("caller", "exec kubectl auth whoami -o json", token=True)
    caller["spec"]["restartPolicy"] = "Never"
    caller["spec"]["containers"][0]["image"] = image_ref("kubectl")
    apply(node_cluster, ns, caller)
    wait_for("the pod to finish", lambda: node_cluster.kubectl(
        "-n", ns, "get", "pod", "caller", "-o", "jsonpath={.status.phase}").stdout in ("Succeeded", "Failed"), timeout=90)
    out = node_cluster.kubectl("-n", ns, "logs", "caller").stdout
    user = json.loads(out)["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{ns}:default", user
    assert user["extra"]["authentication.kubernetes.io/node-name"] == [node_cluster.node.name]
    assert node_cluster.kubectl("get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}").stdout == "10.96.0.1"


def test_pvc_binds_through_the_provisioner_and_data_survives_the_pod(node_cluster, node_namespace):
    ns = node_namespace
    sc = json.loads(node_cluster.kubectl("get", "storageclass", STORAGE_CLASS, "-o", "json").stdout)
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}}
    volume = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    mount = [{"name": "data", "mountPath": "/data"}]
    apply(node_cluster, ns, claim, pod("writer", "echo kept-across-pods > /data/file && exec sleep 3600",
                                       volumes=volume, mounts=mount))
    wait_ready(node_cluster, ns, "writer", timeout=120)
    pvc = json.loads(node_cluster.kubectl("-n", ns, "get", "pvc", "data", "-o", "json").stdout)
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["storageClassName"] == STORAGE_CLASS
    pv = json.loads(node_cluster.kubectl("get", "pv", pvc["spec"]["volumeName"], "-o", "json").stdout)
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == "rancher.io/local-path"
    assert pv["spec"]["hostPath"]["path"].startswith(str(node_cluster.node.volume_dir)), pv["spec"]
    node_cluster.kubectl("-n", ns, "delete", "pod", "writer", "--wait=true", timeout=60)
    apply(node_cluster, ns, pod("reader", "cat /data/file && exec sleep 3600", volumes=volume, mounts=mount))
    wait_ready(node_cluster, ns, "reader")
    assert node_cluster.kubectl("-n", ns, "logs", "reader").stdout.strip() == "kept-across-pods"


def test_load_image_imports_an_oci_archive(node_cluster):
    names = node_cluster.load_image(image_archive("busybox"))
    assert names == [BUSYBOX]
    assert BUSYBOX in node_cluster.node.image_names()


def _leftovers(workdir: Path, cgroup_root: str, netns_inode: int | None) -> dict:
    marker = str(workdir) + "/"
    mounts = []
    for mi in Path("/proc").glob("[0-9]*/mountinfo"):
        try:
            if marker in mi.read_text() or f" {workdir} " in mi.read_text():
                mounts.append(mi.parent.name)
        except OSError:
            continue
    return {
        "processes": node_mod._pids_naming(marker) + node_mod._cgroup_pids(cgroup_root),
        "in_netns": netns.processes_in(netns_inode) if netns_inode else [],
        "cgroups": [str(h / cgroup_root) for h in node_mod._hierarchies() if (h / cgroup_root).exists()],
        "processes_with_its_mounts": mounts,
        "workdir": workdir.exists(),
    }


def test_stop_leaves_nothing_behind(node_cluster):
    """A second node cluster beside the session's (two at once must not collide): run a pod,
    stop, and nothing of it is left; the session's node still works."""
    second = localcluster.start(node=True)
    workdir, cgroup_root = second.workdir, second.node.cgroup_root
    ns_inode = netns.inode(second.node.netns_path)
    try:
        second.kubectl("run", "sleeper", f"--image={BUSYBOX}", "--image-pull-policy=Never", "--restart=Never",
                       "--command", "--", "sleep", "3600")
        second.kubectl("wait", "pod/sleeper", "--for=condition=Ready", "--timeout=90s", timeout=100)
        assert node_mod._cgroup_pids(cgroup_root), "the pod's processes should be in the node's cgroups"
    finally:
        second.stop()
    left = _leftovers(workdir, cgroup_root, ns_inode)
    assert left == {"processes": [], "in_netns": [], "cgroups": [], "processes_with_its_mounts": [], "workdir": False}
    assert not (node_mod.records_dir() / f"{second.node.id}.json").exists()
    assert node_cluster.kubectl("get", "node", node_cluster.node.name, "-o",
                                "jsonpath={.status.conditions[?(@.type=='Ready')].status}").stdout == "True"


KILLED_RUN = """
import json, sys
import localcluster
c = localcluster.start(node=True)
c.kubectl("run", "sleeper", "--image=%s", "--image-pull-policy=Never", "--restart=Never", "--command", "--", "sleep", "3600")
c.kubectl("wait", "pod/sleeper", "--for=condition=Ready", "--timeout=90s", timeout=100)
print(json.dumps({"workdir": str(c.workdir), "cgroup_root": c.node.cgroup_root, "id": c.node.id}), flush=True)
sys.stdin.read()  # until killed
"""


def test_a_killed_test_run_is_cleaned_up_at_the_next_start(node_cluster):
    """SIGKILL gives no chance to stop: the kernel ends the processes the run started, but the
    pods' shims and containers outlive it. The next start (cleanup_stale) removes them."""
    hack = Path(localcluster.__file__).parent.parent
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN % BUSYBOX], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(hack)))
    try:
        info = json.loads(proc.stdout.readline() or "{}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert info, "the child run did not start its node"
    workdir, cgroup_root = Path(info["workdir"]), info["cgroup_root"]
    time.sleep(1)
    before = _leftovers(workdir, cgroup_root, None)
    assert before["processes"], "expected the pod (shim, container) to outlive the killed run"
    cleaned = node_mod.cleanup_stale(print)
    assert info["id"] in cleaned
    after = _leftovers(workdir, cgroup_root, None)
    assert after == {"processes": [], "in_netns": [], "cgroups": [], "processes_with_its_mounts": [], "workdir": False}
