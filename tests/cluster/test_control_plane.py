"""Self-tests of the control plane (hack/localcluster): each proves a real Kubernetes mechanism
works: controllers, scheduler, kwok fake kubelet, garbage collection, PodSecurity admission,
CEL validation of CRDs, RBAC with ServiceAccount tokens, CRD bundles, helm, clean shutdown.

Tests that rely on kwok's fake pods (pods that "run" without images) skip on an existing
cluster without kwok nodes (MLFLOW_OPERATOR_TEST_KUBECONFIG pointing at kind or a real cluster);
tests that start their own control planes need the local one; the others run anywhere.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from kubernetes import client
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

import localcluster
import localcluster.cluster
from localcluster.processes import free_port, group_members

FAIL = localcluster.FAIL_ANNOTATION
NOT_READY = localcluster.NOT_READY_ANNOTATION


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60, interval: float = 0.2) -> Any:
    """Poll fn() until it returns something truthy; fail with `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


@pytest.fixture(scope="module")
def api(cluster) -> client.ApiClient:
    return cluster.api_client()


@pytest.fixture
def needs_kwok(cluster):
    if not cluster.kwok_nodes():
        pytest.skip("needs kwok fake nodes (pods without images), as the local control plane has")


def _container(name: str = "app") -> dict:
    return {"name": name, "image": "registry.invalid/mlflow-operator/test:1", "command": ["true"]}


def _pods(api: client.ApiClient, ns: str, selector: str) -> list:
    return client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=selector).items


def _condition(obj: Any, ctype: str) -> Any:
    for c in (obj.status.conditions or []):
        if c.type == ctype:
            return c
    return None


# --------------------------------------------------------------------------- basics
def test_version_and_readiness(cluster):
    readyz = cluster.kubectl("get", "--raw", "/readyz?verbose").stdout
    assert "readyz check passed" in readyz
    version = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    if cluster.owned:
        assert version["gitVersion"] == localcluster.KUBERNETES
        assert cluster.server.startswith("https://127.0.0.1:")
        client_version = json.loads(cluster.kubectl("version", "--client", "-o", "json").stdout)
        assert client_version["clientVersion"]["gitVersion"] == localcluster.KUBERNETES


def test_fake_node_ready_and_only_annotated_nodes_managed(cluster, needs_kwok):
    nodes = client.CoreV1Api(cluster.api_client()).list_node().items
    fake = [n for n in nodes if (n.metadata.annotations or {}).get(localcluster.FAKE_NODE_ANNOTATION) == "fake"]
    assert fake, "no kwok node"
    for n in fake:
        assert _condition(n, "Ready").status == "True"
    # A node without the annotation is not kwok's: it never becomes Ready.
    name = f"unmanaged-{secrets.token_hex(3)}"
    core = client.CoreV1Api(cluster.api_client())
    # Tainted so that no pod of another test lands on it meanwhile.
    core.create_node({"metadata": {"name": name, "labels": {"type": "real"}},
                      "spec": {"taints": [{"key": "mlflow-operator.dev/test-unmanaged", "effect": "NoSchedule"}]}})
    try:
        time.sleep(3)
        node = core.read_node(name)
        assert _condition(node, "Ready") is None, f"kwok touched an unannotated node: {node.status.conditions}"
    finally:
        core.delete_node(name)


# --------------------------------------------------------------------------- workloads
def test_deployment_becomes_available_with_running_pods(cluster, api, namespace, needs_kwok):
    apps = client.AppsV1Api(api)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [_container()]}},
        },
    })

    def available():
        d = apps.read_namespaced_deployment("web", namespace)
        return d if (d.status.available_replicas or 0) == 2 else None

    d = wait_for("deployment web to have 2 available replicas", available, timeout=60)
    assert _condition(d, "Available").status == "True"
    pods = _pods(api, namespace, "app=web")
    assert len(pods) == 2
    for p in pods:
        assert p.status.phase == "Running"
        assert p.spec.node_name, "pod was not scheduled"
        assert _condition(p, "Ready").status == "True"
        assert p.status.container_statuses[0].state.running is not None
        assert p.status.pod_ip


def test_pod_marked_not_ready_runs_but_is_not_ready(api, namespace, needs_kwok):
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "slow", "annotations": {NOT_READY: "true"}},
        "spec": {"containers": [_container()]},
    })
    pod = wait_for("pod slow Running", lambda: (p := core.read_namespaced_pod("slow", namespace)).status.phase == "Running" and p)
    assert _condition(pod, "Ready").status == "False"


def _job(name: str, annotations: dict | None = None) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {"restartPolicy": "Never", "containers": [_container("task")]},
            },
        },
    }


def _job_finished(batch: client.BatchV1Api, name: str, ns: str) -> Callable[[], Any]:
    def check():
        job = batch.read_namespaced_job(name, ns)
        for ctype in ("Complete", "Failed"):
            c = _condition(job, ctype)
            if c is not None and c.status == "True":
                return job
        return None
    return check


def test_job_completes(api, namespace, needs_kwok):
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(namespace, _job("ok"))
    job = wait_for("job ok to finish", _job_finished(batch, "ok", namespace), timeout=60)
    assert _condition(job, "Complete") is not None and _condition(job, "Complete").status == "True", job.status
    assert job.status.succeeded == 1
    (pod,) = _pods(api, namespace, "job-name=ok")
    assert pod.status.phase == "Succeeded"
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 0 and term.reason == "Completed"


def test_job_fails_on_demand(api, namespace, needs_kwok):
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(namespace, _job("broken", {FAIL: "true"}))
    job = wait_for("job broken to finish", _job_finished(batch, "broken", namespace), timeout=60)
    failed = _condition(job, "Failed")
    assert failed is not None and failed.status == "True", job.status
    assert failed.reason == "BackoffLimitExceeded"
    assert not job.status.succeeded
    (pod,) = _pods(api, namespace, "job-name=broken")
    assert pod.status.phase == "Failed"
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 1 and term.reason == "Error"


# --------------------------------------------------------------------------- garbage collection
def test_deleting_owner_garbage_collects_dependents(api, namespace):
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}, "data": {"k": "v"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    for i in range(2):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": f"dep-{i}", "ownerReferences": [ref]}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "bystander"}})

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def dependents_gone():
        names = {c.metadata.name for c in core.list_namespaced_config_map(namespace).items}
        return names if not names & {"dep-0", "dep-1"} else None

    names = wait_for("dependents dep-0, dep-1 to be garbage-collected", dependents_gone, timeout=60)
    assert "bystander" in names, "garbage collector deleted an object without an owner reference"


def test_deleting_deployment_foreground_removes_replicasets_and_pods(api, namespace, needs_kwok):
    apps = client.AppsV1Api(api)
    labels = {"app": "gc"}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "gc"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [_container()]}}},
    })
    wait_for("a pod of deployment gc", lambda: _pods(api, namespace, "app=gc"))
    assert apps.list_namespaced_replica_set(namespace, label_selector="app=gc").items
    apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Foreground")
    wait_for(
        "deployment gc, its ReplicaSet and pods to be gone",
        lambda: not apps.list_namespaced_deployment(namespace).items
        and not apps.list_namespaced_replica_set(namespace, label_selector="app=gc").items
        and not _pods(api, namespace, "app=gc"),
        timeout=60,
    )


# --------------------------------------------------------------------------- admission
def test_privileged_pod_rejected_by_pod_security_restricted(api, namespace):
    core = client.CoreV1Api(api)
    core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    privileged = {
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{**_container(), "securityContext": {"privileged": True}}]},
    }
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(namespace, privileged)
    assert err.value.status == 403
    body = json.loads(err.value.body)
    assert 'violates PodSecurity "restricted:latest"' in body["message"]
    assert "privileged" in body["message"]
    assert not core.list_namespaced_pod(namespace).items

    # The same namespace admits a pod that meets the restricted profile: the rejection is
    # PodSecurity's judgement, not a blanket refusal.
    compliant = {
        "metadata": {"name": "compliant"},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{**_container(), "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
        },
    }
    created = core.create_namespaced_pod(namespace, compliant, dry_run="All")
    assert created.metadata.name == "compliant"


def test_crd_cel_rule_rejects_invalid_object_with_its_message(cluster, api):
    ext = client.ApiextensionsV1Api(api)
    suffix = secrets.token_hex(3)
    group = f"cel{suffix}.test.mlflow-operator.dev"
    plural = "ranges"
    message = "spec.min must not exceed spec.max"
    ext.create_custom_resource_definition({
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": "range", "kind": "Range", "listKind": "RangeList"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["min", "max"],
                        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                        "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": message}],
                    }},
                }},
            }],
        },
    })
    try:
        cluster._wait_established([f"{plural}.{group}"])
        custom = client.CustomObjectsApi(api)

        def create(name: str, lo: int, hi: int):
            return custom.create_namespaced_custom_object(group, "v1", "default", plural, {
                "apiVersion": f"{group}/v1", "kind": "Range", "metadata": {"name": name}, "spec": {"min": lo, "max": hi}})

        # Discovery of a new CRD can lag a moment behind Established.
        wait_for("the new CRD to be served", lambda: _try_create(create, "good", 1, 2), timeout=30)
        with pytest.raises(ApiException) as err:
            create("bad", 5, 2)
        assert err.value.status == 422
        assert message in json.loads(err.value.body)["message"]
        with pytest.raises(ApiException):
            custom.get_namespaced_custom_object(group, "v1", "default", plural, "bad")
        # Updates are validated too.
        with pytest.raises(ApiException) as err:
            custom.patch_namespaced_custom_object(group, "v1", "default", plural, "good", {"spec": {"min": 9}})
        assert message in json.loads(err.value.body)["message"]
    finally:
        ext.delete_custom_resource_definition(f"{plural}.{group}")


def _try_create(create: Callable, *args: Any) -> bool:
    try:
        create(*args)
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


# --------------------------------------------------------------------------- RBAC
def test_service_account_with_narrow_rbac_gets_403_outside_its_grant(cluster, api, namespace):
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "narrow"}})
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "configmap-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
    })
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "narrow-reads-configmaps"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "narrow", "namespace": namespace}],
    })
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "visible"}, "data": {"a": "b"}})

    kubeconfig = cluster.kubeconfig_for_service_account(namespace, "narrow")
    assert kubeconfig.is_file() and oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
    sa_api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    sa_core = client.CoreV1Api(sa_api)

    # Inside the grant.
    assert sa_core.read_namespaced_config_map("visible", namespace).data == {"a": "b"}
    assert [c.metadata.name for c in sa_core.list_namespaced_config_map(namespace).items if c.metadata.name == "visible"]
    whoami = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:narrow"

    # Outside it: another resource, another verb, another namespace.
    for call in (
        lambda: sa_core.list_namespaced_secret(namespace),
        lambda: sa_core.create_namespaced_config_map(namespace, {"metadata": {"name": "nope"}}),
        lambda: sa_core.list_namespaced_config_map("default"),
    ):
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 403, err.value
        assert "forbidden" in json.loads(err.value.body)["message"]
    proc = cluster.kubectl("get", "secrets", "-n", namespace, kubeconfig=kubeconfig, check=False)
    assert proc.returncode != 0 and "Forbidden" in proc.stderr


# --------------------------------------------------------------------------- add-ons
def test_gateway_api_and_servicemonitor_crds_install(cluster, api, namespace):
    names = cluster.install_gateway_api_crds()
    assert "httproutes.gateway.networking.k8s.io" in names
    assert cluster.install_servicemonitor_crd() == ["servicemonitors.monitoring.coreos.com"]
    custom = client.CustomObjectsApi(api)
    route = custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "svc", "port": 5000}]}]},
    })
    assert route["metadata"]["name"] == "r"
    sm = custom.create_namespaced_custom_object("monitoring.coreos.com", "v1", namespace, "servicemonitors", {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "m"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "endpoints": [{"port": "http", "path": "/metrics"}]},
    })
    assert sm["spec"]["endpoints"][0]["port"] == "http"
    # The CRDs' own schemas are enforced (a port must be an integer).
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", {
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "bad"},
            "spec": {"rules": [{"backendRefs": [{"name": "svc", "port": 700000}]}]},
        })
    assert err.value.status == 422
    # Installing again is idempotent, and puts back a CRD deleted meanwhile.
    assert cluster.install_servicemonitor_crd() == ["servicemonitors.monitoring.coreos.com"]
    cluster.kubectl("delete", "crd", "servicemonitors.monitoring.coreos.com")
    assert cluster.install_servicemonitor_crd() == ["servicemonitors.monitoring.coreos.com"]
    assert cluster.kubectl("get", "servicemonitors", "-n", namespace, "-o", "name").returncode == 0


def test_helm_installs_a_chart(cluster, namespace, tmp_path: Path):
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  greeting: {{ .Values.greeting }}\n"
    )
    cluster.helm("install", "tiny", str(chart), "-n", namespace, "--set", "greeting=hi", "--wait", "--timeout", "60s")
    cm = json.loads(cluster.kubectl("get", "configmap", "tiny-cm", "-n", namespace, "-o", "json").stdout)
    assert cm["data"] == {"greeting": "hi"}
    releases = json.loads(cluster.helm("list", "-n", namespace, "-o", "json").stdout)
    assert [r["name"] for r in releases] == ["tiny"]


# --------------------------------------------------------------------------- lifecycle
def test_second_cluster_starts_and_stops_leaving_no_process(cluster):
    if not cluster.owned:
        pytest.skip("only for the local control plane")
    t0 = time.monotonic()
    second = localcluster.start(timeout=90)
    started = time.monotonic() - t0
    try:
        assert second.server != cluster.server
        assert json.loads(second.kubectl("get", "--raw", "/version").stdout)["gitVersion"] == localcluster.KUBERNETES
        pids = [p.pid for p in second.processes]
        assert {p.name for p in second.processes} == {
            "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
        assert all(second.alive().values())
        workdir = second.workdir
    finally:
        second.stop()
    for pid in pids:
        assert not group_members(pid), f"process group {pid} still has members after stop()"
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not workdir.exists()
    second.stop()  # idempotent
    print(f"second cluster start-to-ready: {started:.1f}s")


_CHILD = """
import json, signal, sys, time
# A shell without job control starts background commands with SIGINT ignored, and the child would
# inherit that; a session someone can Ctrl-C has Python's default handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
import localcluster
c = localcluster.start(timeout=90)
print(json.dumps({"pids": [p.pid for p in c.processes], "workdir": str(c.workdir)}), flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_interrupted_session_leaves_no_process(cluster, sig):
    """Ctrl-C (SIGINT) and SIGTERM stop the cluster through the handlers/atexit; even SIGKILL of
    the starting process takes its children down (PR_SET_PDEATHSIG)."""
    if not cluster.owned:
        pytest.skip("only for the local control plane")
    hack = Path(localcluster.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(hack))
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env, start_new_session=True)
    try:
        line = child.stdout.readline()
        assert line, f"child did not start a cluster: {child.stderr.read()[-3000:]}"
        info = json.loads(line)
        pids = info["pids"]
        assert len(pids) == 5 and all(group_members(pid) for pid in pids)
        child.send_signal(sig)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    wait_for(f"every control-plane process to exit after {sig.name}",
             lambda: not any(group_members(pid) for pid in pids), timeout=30)
    if sig != signal.SIGKILL:
        assert not Path(info["workdir"]).exists(), "temp dir left behind after a clean stop"
    else:
        shutil.rmtree(info["workdir"], ignore_errors=True)


def test_existing_cluster_errors_are_clear(tmp_path: Path):
    with pytest.raises(localcluster.ClusterError, match="does not exist"):
        localcluster.existing(tmp_path / "missing.kubeconfig")
    bad = tmp_path / "bad.kubeconfig"
    closed = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    bad.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "x", "cluster": {"server": closed}}],
                               "users": [{"name": "x", "user": {"token": "not-checked"}}], "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
                               "current-context": "x"}))
    c = localcluster.existing(bad)
    with pytest.raises(localcluster.KubectlError) as err:
        c.kubectl("get", "--raw", "/readyz", timeout=30)
    assert "was refused" in str(err.value) and closed.removeprefix("https://") in str(err.value)
    c.stop()  # never stops a cluster it did not start


def test_component_that_fails_to_start_gives_its_log_and_leaves_nothing(cluster, tmp_path, monkeypatch):
    """A broken kube-apiserver: start() raises ClusterError naming it, with its log tail, and
    stops etcd, which had started."""
    if not cluster.owned:
        pytest.skip("only for the local control plane")
    bins = tmp_path / "bin"
    bins.mkdir()
    for name in ("etcd", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl"):
        (bins / name).symlink_to(cluster.bin_dir / name)
    broken = bins / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'E0000 simulated failure: unknown flag --oops' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setattr(localcluster.cluster.build, "ensure", lambda log=None: bins)
    with pytest.raises(localcluster.ClusterError) as err:
        localcluster.start(timeout=30)
    text = str(err.value)
    assert "kube-apiserver exited with code 3" in text
    assert "simulated failure: unknown flag --oops" in text
    logs = Path(re.search(r"logs kept in (\S+?)\)", text).group(1))
    assert (logs / "etcd.log").is_file()
    workdir = str(logs.parent)
    assert not _pids_mentioning(workdir), "etcd of the failed start is still running"
    shutil.rmtree(workdir, ignore_errors=True)


def _pids_mentioning(text: str) -> list[int]:
    """Running (non-zombie) processes whose command line contains `text`."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text in cmd and state != "Z":
                out.append(int(entry.name))
    return out


def test_fixture_fails_not_skips_when_control_plane_cannot_be_built(tmp_path):
    """No Go toolchain and an empty cache: tests using `cluster` FAIL with the reason."""
    (tmp_path / "test_needs_cluster.py").write_text("def test_it(cluster):\n    pass\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    hack = Path(localcluster.__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_OPERATOR_TEST_KUBECONFIG"}
    env.update(PYTHONPATH=str(hack), PATH="/usr/bin:/bin", XDG_CACHE_HOME=str(tmp_path / "empty-cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "localcluster.pytest_plugin", "-p", "no:cacheprovider", "-rfEs",
         str(tmp_path / "test_needs_cluster.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 error" in out and "skipped" not in out, out
    assert "could not be built or started" in out and "Go toolchain" in out, out


def test_component_logs_are_kept(cluster):
    if not cluster.owned:
        pytest.skip("only for the local control plane")
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
        assert (cluster.log_dir / f"{name}.log").is_file()
    assert os.path.getsize(cluster.log_dir / "kube-apiserver.log") > 0
