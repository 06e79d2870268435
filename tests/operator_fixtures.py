"""The operator as users run it, for the cluster and workload tiers.

`operator_process` (session): installs the CRD from crds/ and the chart's ServiceAccount and RBAC
(rendered by the real `helm template`), then runs `mlflow-operator run` as a process whose kubeconfig
holds that ServiceAccount's token: every API call the operator makes is checked against the chart's
least-privilege ClusterRole, not cluster-admin.

Helpers wait the way prometheus-operator's e2e framework does: until every condition describes the
current generation and the wanted conditions hold.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "mlflow-operator"
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples"
OPERATOR_NAMESPACE = "mlflow-operator-system"
RELEASE = "mlflow-operator"
SERVICE_ACCOUNT = "mlflow-operator"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OperatorProcess:
    proc: subprocess.Popen | None
    log_path: Path
    kubeconfig: Path
    metrics_url: str
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    health_port: int = 0

    def logs(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def assert_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"the operator exited with {self.proc.returncode}:\n{self.logs()}")


def install_crds(cluster, crds: Path = CRDS) -> None:
    for path in sorted(crds.glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for path in sorted(crds.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                # Polled: `kubectl wait` fails at once while a new CRD has no conditions yet.
                name = doc["metadata"]["name"]
                wait_for(f"CRD {name} to be established",
                         lambda: condition(get_json(cluster, "crd", name), "Established").get("status") == "True", timeout=60)


def install_chart_rbac(cluster, values: list[str] | None = None, release: str = RELEASE,
                       templates: tuple[str, ...] = ("serviceaccount.yaml", "rbac.yaml")) -> str:
    """`helm template` of the chart; applies its ServiceAccount and RBAC (the Deployment needs an image
    registry, which this machine has not: the operator runs as a process instead)."""
    args = ["template", release, str(CHART), "--namespace", OPERATOR_NAMESPACE]
    for value in values or []:
        args += ["--set", value]
    for template in templates:
        args += ["--show-only", f"templates/{template}"]
    rendered = cluster.helm(*args).stdout
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    cluster.kubectl("apply", "--server-side", "-f", "-", input=rendered)
    return rendered


def start_operator(cluster, tmp_dir: Path, extra_args: tuple[str, ...] = (),
                   service_account: str = SERVICE_ACCOUNT) -> OperatorProcess:
    kubeconfig = cluster.kubeconfig_for_service_account(OPERATOR_NAMESPACE, service_account)
    health, metrics = free_port(), free_port()
    log_path = tmp_dir / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    cmd = [
        str(Path(sys.executable).with_name("mlflow-operator")), "run",
        "--resync-seconds", "5", "--log-format", "json", "--bind-address", "127.0.0.1",
        "--health-port", str(health), "--metrics-port", str(metrics), *extra_args,
    ]
    if not any(a.startswith("--namespace") for a in extra_args):
        cmd.append("--all-namespaces")
    if not any(a.startswith("--peering") for a in extra_args):
        cmd.append("--standalone")
    op = OperatorProcess(None, log_path, kubeconfig, f"http://127.0.0.1:{metrics}/metrics", cmd, env, health)
    log_path.write_text("")
    launch_operator(op)
    return op


def launch_operator(op: OperatorProcess) -> None:
    """Starts (or starts again, after stop_operator) the operator process; returns once it serves
    its health endpoint. A restart keeps the same ports; the previous process's log moves to
    operator.log.<n>, so the log read by tests is this process's alone."""
    if op.log_path.exists() and op.log_path.stat().st_size:
        n = 1
        while op.log_path.with_name(f"{op.log_path.name}.{n}").exists():
            n += 1
        op.log_path.rename(op.log_path.with_name(f"{op.log_path.name}.{n}"))
    with open(op.log_path, "a") as log:
        op.proc = subprocess.Popen(op.cmd, stdout=log, stderr=subprocess.STDOUT, env=op.env, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        op.assert_alive()
        try:
            with socket.create_connection(("127.0.0.1", op.health_port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                stop_operator(op)
                raise AssertionError(f"the operator's health endpoint did not come up in 60 s:\n{op.logs()}")
            time.sleep(0.2)


def stop_operator(op: OperatorProcess) -> None:
    if op.proc is not None and op.proc.poll() is None:
        os.killpg(op.proc.pid, signal.SIGTERM)
        try:
            op.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(op.proc.pid, signal.SIGKILL)
            op.proc.wait()


@contextlib.contextmanager
def operator_stopped(op: OperatorProcess) -> Iterator[None]:
    """The (session's) operator is stopped inside the block and started again after it."""
    stop_operator(op)
    try:
        yield
    finally:
        launch_operator(op)


@pytest.fixture(scope="session")
def operator_process(cluster, tmp_path_factory) -> Iterator[OperatorProcess]:
    install_crds(cluster)
    install_chart_rbac(cluster)
    op = start_operator(cluster, tmp_path_factory.mktemp("operator"))
    try:
        yield op
    finally:
        stop_operator(op)


# ---- reading and waiting ------------------------------------------------------------------------

def get_json(cluster, *args: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr or "not found" in proc.stderr:
            return None
        raise AssertionError(f"kubectl get {' '.join(args)} failed: {proc.stderr}")
    return json.loads(proc.stdout)


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60, interval: float = 0.5,
             explain: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = explain() if explain else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{detail}")
        time.sleep(interval)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return cond
    return {}


def conditions_current(obj: dict[str, Any] | None) -> bool:
    """Every condition describes the object's current generation."""
    if not obj or not (obj.get("status") or {}).get("conditions"):
        return False
    generation = obj["metadata"]["generation"]
    return obj["status"].get("observedGeneration") == generation and all(
        c.get("observedGeneration") == generation for c in obj["status"]["conditions"]
    )


def wait_for_conditions(cluster, namespace: str, name: str, timeout: float = 90, op: OperatorProcess | None = None,
                        **wanted: str) -> dict[str, Any]:
    """Waits until the TrackingServer's conditions are current and have the wanted statuses
    (e.g. Ready="True", MigrationsApplied="False")."""
    last: dict[str, Any] = {}

    def probe():
        nonlocal last
        last = get_json(cluster, "trackingserver", name, "-n", namespace) or {}
        if not conditions_current(last):
            return None
        return last if all(condition(last, t).get("status") == s for t, s in wanted.items()) else None

    def explain() -> str:
        status = json.dumps(last.get("status"), indent=1)
        return f"status: {status}\n" + (f"operator log:\n{op.logs()}" if op else "")

    return wait_for(f"{namespace}/{name} conditions {wanted}", probe, timeout, explain=explain)


def load_example(name: str, namespace: str) -> dict[str, Any]:
    """An example's TrackingServer, moved into the test's namespace."""
    docs = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    ts = next(d for d in docs if d.get("kind") == "TrackingServer")
    ts["metadata"]["namespace"] = namespace
    return ts


def apply_object(cluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def owned_children(cluster, namespace: str, instance: str) -> set[tuple[str, str]]:
    kinds = "deployments,services,serviceaccounts,jobs,ingresses,networkpolicies,poddisruptionbudgets,horizontalpodautoscalers,secrets,persistentvolumeclaims"
    selector = f"app.kubernetes.io/instance={instance}"
    items = get_json(cluster, kinds, "-n", namespace, "-l", selector)["items"]
    for optional in ("httproutes.gateway.networking.k8s.io", "servicemonitors.monitoring.coreos.com"):
        proc = cluster.kubectl("get", optional, "-n", namespace, "-l", selector, "-o", "json", check=False)
        if proc.returncode == 0:  # served only when the CRD is installed
            items += json.loads(proc.stdout)["items"]
    return {(i["kind"], i["metadata"]["name"]) for i in items}


# ---- volumes ------------------------------------------------------------------------------------

class StaticProvisioner:
    """Binds each pending PersistentVolumeClaim to a new hostPath PersistentVolume made for it.

    The local control plane has no storage provisioner. This plays one: the PV controller (in the real
    kube-controller-manager) does the binding, so claims, retention and re-attachment behave as in a
    cluster. PVs use reclaimPolicy Retain, as the data of a TrackingServer deserves.
    """

    def __init__(self, cluster, root: Path):
        import threading

        self.cluster, self.root = cluster, root
        self.stopped = threading.Event()
        self.on_hold = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="static-provisioner", daemon=True)
        self.errors: list[str] = []

    def start(self) -> "StaticProvisioner":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def hold(self):
        """While held, claims stay Pending: a cluster without a provisioner or a default StorageClass."""
        import contextlib

        @contextlib.contextmanager
        def held():
            self.on_hold.set()
            try:
                yield self
            finally:
                self.on_hold.clear()
        return held()

    def _loop(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.cluster.api_client())
        while not self.stopped.wait(0.5):
            if self.on_hold.is_set():
                continue
            try:
                for pvc in core.list_persistent_volume_claim_for_all_namespaces().items:
                    if pvc.status.phase == "Pending" and not pvc.spec.volume_name and not pvc.metadata.deletion_timestamp:
                        self._provision(core, pvc)
            except Exception as exc:  # noqa: BLE001 - keep provisioning; report in the test's failure
                self.errors.append(repr(exc))

    def _provision(self, core, pvc) -> None:
        from kubernetes import client

        name = f"pv-{pvc.metadata.uid}"
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        pv = client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name=name, labels={"mlflow-operator.dev/test": "true"}),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": pvc.spec.resources.requests["storage"]},
                access_modes=pvc.spec.access_modes,
                persistent_volume_reclaim_policy="Retain",
                storage_class_name=pvc.spec.storage_class_name or "",
                host_path=client.V1HostPathVolumeSource(path=str(path)),
                claim_ref=client.V1ObjectReference(namespace=pvc.metadata.namespace, name=pvc.metadata.name, uid=pvc.metadata.uid),
            ),
        )
        try:
            core.create_persistent_volume(pv)
        except client.exceptions.ApiException as exc:
            if exc.status != 409:
                raise


@pytest.fixture(scope="session")
def volume_provisioner(cluster, tmp_path_factory) -> Iterator[StaticProvisioner]:
    provisioner = StaticProvisioner(cluster, tmp_path_factory.mktemp("volumes")).start()
    try:
        yield provisioner
    finally:
        provisioner.stop()
