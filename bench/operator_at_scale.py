"""`make bench-operator`: the operator at platform scale, on a fresh local control plane for each N.

For each N: a fresh control plane (hack/localcluster: real kube-apiserver, etcd, controller-manager,
scheduler; kwok plays the kubelet) with an audit log of service accounts' requests; the CRD and
the chart's ServiceAccount and RBAC; the operator as the cluster tests run it (a process holding
that ServiceAccount's token, standalone), with `--resync-seconds 60` as the chart ships; N
quickstart TrackingServers (`spec: {}`) over N/10 namespaces, their volumes bound by the tests'
provisioner. Then, in order:

1. from the first create until every TrackingServer is Ready (per object: p50/p95 of its own
   creationTimestamp to Ready, to the second);
2. the operator's requests during that, by verb (from the audit log), and failed passes
   (mlflow_operator_reconciles_total{result="error"});
3. the next 60 s with nothing changing: the operator's writes and reads, its CPU;
4. a restart of the operator, and its writes in the 60 s after;
5. an edit of every TrackingServer's pod template, until all are Ready on the new generation;
6. deleting every TrackingServer, until they and their Deployments are gone;
7. the control plane's floor for step 5, without the operator: N Deployments as the operator
   rendered them (a claim each), one pod-template edit of all until rolled out, with the rendered
   Recreate strategy, then again as RollingUpdate (the anchor's quickstart has no volume and rolls
   its Deployments that way). What the operator adds to step 5 is what it takes above this.

The operator's peak RSS (VmHWM of either process) and CPU seconds (both processes) close the
row. The targets are issue 18's; the controller-runtime figures beside them are the issue's
measurement of NotHarshhaa/mlflow-k8s-operator on this machine and harness (it is not a Go module
the module proxy serves, so it is not rebuilt here). Every wait is bounded.

    .venv/bin/python bench/operator_at_scale.py [--n 100 250 500] [--idle-seconds 60]

(Not bench/operator.py: a script's folder comes first on sys.path, and a module named `operator`
would shadow the standard library's.)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
sys.path.insert(0, str(REPO))

from localcluster import audit, start  # noqa: E402
from tests.operator_fixtures import (  # noqa: E402
    OPERATOR_NAMESPACE,
    SERVICE_ACCOUNT,
    StaticProvisioner,
    install_chart_rbac,
    install_crds,
    start_operator,
    stop_operator,
)

OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{SERVICE_ACCOUNT}"
GROUP, VERSION, PLURAL = "mlflow-operator.dev", "v1alpha1", "trackingservers"
# issue 18's controller-runtime anchor at N=500 on this machine and harness
EDIT_ANNOTATION = "bench.mlflow-operator.dev/edit"
FLOOR_ANNOTATION = "bench.mlflow-operator.dev/floor"  # the floor's Deployments carry it from creation
ANCHOR_500 = {"all_ready_s": 146.0, "reconverge_s": 103.0, "idle_writes": 315, "restart_writes": 1570, "rss_mb": 69.0}


@dataclass
class Row:
    n: int
    namespaces: int
    all_ready_s: float = 0.0
    ready_p50_s: float = 0.0
    ready_p95_s: float = 0.0
    # where each server's time to Ready goes, (p50, p95, max) seconds of each step, from timestamps
    ready_steps: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    created_s: float = 0.0  # how long `kubectl create` of all N took
    passes: int = 0
    failed_passes: int = 0
    convergence_requests: dict[str, int] = field(default_factory=dict)
    idle_writes: int = 0
    idle_reads: int = 0
    idle_watches: int = 0
    idle_cpu_percent: float = 0.0
    settled_cpu_percent: float = 0.0  # the minute after that one
    restart_writes: int = 0
    restart_reads: int = 0
    reconverge_s: float | None = None
    # where the re-convergence's time goes: the operator's applies, then the control plane's rollouts
    edit_applied_s: float | None = None
    edit_rolled_out_s: float | None = None
    delete_s: float | None = None
    # the control plane alone (step 7): the same edit of N rendered Deployments rolled out in
    floor_recreate_s: float | None = None
    floor_rolling_s: float | None = None
    peak_rss_mb: float = 0.0
    # where the peak comes from: (phase, VmHWM so far, VmRSS now) of the process in that phase
    rss_by_phase: list[tuple[str, float, float]] = field(default_factory=list)
    cpu_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    # by "verb resource", for the lines under the table
    convergence_by_resource: dict[str, int] = field(default_factory=dict)
    edit_by_resource: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def profiled(directory: str | None, label: str, pid: int, seconds: float | None = None):
    """With --profile DIR: py-spy samples the operator over the block (DIR/<label>.txt, collapsed
    stacks of every thread but those py-spy sees idle; a worker thread waiting on its queue still
    shows), for `seconds` or until the block ends."""
    if not directory:
        yield
        return
    out = Path(directory) / f"{label}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    duration = ["--duration", str(int(seconds))] if seconds else []
    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid), *duration,
                            "--format", "raw", "--rate", "50", "--output", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        if not seconds:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.terminate()


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory_mb(pid: int, field_name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def proc_peak_rss_mb(pid: int) -> float:
    return proc_memory_mb(pid, "VmHWM")


def note_memory(row: "Row", phase: str, pid: int) -> None:
    row.rss_by_phase.append((phase, proc_peak_rss_mb(pid), proc_memory_mb(pid, "VmRSS")))


def reconcile_counts(metrics_url: str) -> dict[str, float]:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mlflow_operator_reconciles_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            counts[result] = counts.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def ready_generation(ts: dict) -> int | None:
    for cond in (ts.get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready" and cond["status"] == "True":
            return cond.get("observedGeneration")
    return None


def wait_all_ready(api, n: int, started: float, timeout: float, min_generation: dict | None = None,
                   latencies: dict[str, float] | None = None) -> dict[str, float]:
    """Seconds from `started` until each TrackingServer was first seen Ready (on a generation above
    `min_generation`'s, when given); polls once a second with one LIST. `latencies` gets each one's
    seconds from its own creation to Ready."""
    import datetime as dt

    ready_at: dict[str, float] = {}
    deadline = started + timeout
    while time.monotonic() < deadline:
        items = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        now = time.monotonic()
        for ts in items:
            key = f"{ts['metadata']['namespace']}/{ts['metadata']['name']}"
            gen = ready_generation(ts)
            if key in ready_at or gen is None or gen != ts["metadata"]["generation"]:
                continue
            if min_generation and gen <= min_generation.get(key, 0):
                continue
            ready_at[key] = now - started
            if latencies is not None:
                created = dt.datetime.fromisoformat(ts["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
                latencies[key] = (audit.now() - created).total_seconds()
        if len(ready_at) >= n:
            break
        time.sleep(1.0)
    return ready_at


class RolloutSampler:
    """During the edit of all: when each Deployment first carried the edited pod template (the
    operator's apply) and when it was first rolled out on it (kube-controller-manager, the
    scheduler and kwok), from one cluster-wide LIST every second, in a thread of its own."""

    def __init__(self, apps, started: float, annotation: str) -> None:
        import threading

        self.apps, self.started, self.annotation = apps, started, annotation
        self.applied: dict[str, float] = {}
        self.rolled_out: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                items = self.apps.list_deployment_for_all_namespaces(_request_timeout=30).items
            except Exception:  # noqa: BLE001 - a missed sample only delays a figure by a second
                items = []
            now = time.monotonic() - self.started
            for d in items:
                key = f"{d.metadata.namespace}/{d.metadata.name}"
                if self.annotation not in ((d.spec.template.metadata.annotations or {}) if d.spec.template.metadata else {}):
                    continue
                self.applied.setdefault(key, now)
                st, want = d.status, d.spec.replicas or 0
                if (st.observed_generation or 0) >= d.metadata.generation and (st.updated_replicas or 0) == want \
                        and (st.ready_replicas or 0) == want and (st.replicas or 0) == want:
                    self.rolled_out.setdefault(key, now)
            self._stop.wait(1.0)

    def __enter__(self) -> "RolloutSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        # the TrackingServers can be seen Ready before the sampler's next LIST sees the last
        # Deployment rolled out: give it a few more samples
        deadline = time.monotonic() + 30
        while exc[0] is None and len(self.rolled_out) < len(self.applied) and time.monotonic() < deadline:
            time.sleep(0.5)
        self._stop.set()
        self._thread.join(timeout=60)


def by_resource(log: Path, since, until) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(f"{r.verb} {r.resource}" for r in audit.requests(log, OPERATOR_USER, since, until)
                        if r.verb != "watch").most_common())


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


READY_STEPS = (
    ("created to its Deployment (operator)", "created", "deployment"),
    ("Deployment to pod scheduled (claim bound, scheduler)", "deployment", "scheduled"),
    ("pod scheduled to pod Ready (kwok)", "scheduled", "pod_ready"),
    ("pod Ready to TrackingServer Ready (operator)", "pod_ready", "ready"),
)


def ready_steps(cluster) -> dict[str, tuple[float, float, float]]:
    """Each server's way to Ready, step by step, from the objects' own timestamps (seconds): when
    the TrackingServer was created, its Deployment created, its pod scheduled and Ready, and the
    TrackingServer's Ready condition set. What the operator adds is the first and the last step."""
    import datetime as dt

    def at(text: str | None) -> float | None:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None

    def cond(obj: dict, type_: str) -> float | None:
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c["type"] == type_ and c["status"] == "True":
                return at(c.get("lastTransitionTime"))
        return None

    def items(*what: str) -> list[dict]:
        out = cluster.kubectl("get", *what, "-A", "-o", "json", "-l", "app.kubernetes.io/managed-by=mlflow-operator")
        return json.loads(out.stdout)["items"]

    times: dict[tuple[str, str], dict[str, float | None]] = {}
    for ts in json.loads(cluster.kubectl("get", "trackingservers", "-A", "-o", "json").stdout)["items"]:
        key = (ts["metadata"]["namespace"], ts["metadata"]["name"])
        times[key] = {"created": at(ts["metadata"]["creationTimestamp"]), "ready": cond(ts, "Ready")}
    for obj in items("deployments"):
        key = (obj["metadata"]["namespace"], obj["metadata"]["labels"].get("app.kubernetes.io/instance"))
        if key in times:
            times[key]["deployment"] = at(obj["metadata"]["creationTimestamp"])
    for pod in items("pods"):
        key = (pod["metadata"]["namespace"], pod["metadata"]["labels"].get("app.kubernetes.io/instance"))
        if key in times:
            times[key]["scheduled"], times[key]["pod_ready"] = cond(pod, "PodScheduled"), cond(pod, "Ready")
    steps = {}
    for label, start, end in READY_STEPS:
        values = [t[end] - t[start] for t in times.values() if t.get(start) is not None and t.get(end) is not None]
        if values:
            steps[label] = (percentile(values, 0.5), percentile(values, 0.95), max(values))
    return steps


def floor_objects(deployment: dict, claim: dict, namespaces: list[str], n: int) -> list[dict]:
    """Step 7's objects: N copies of a Deployment the operator rendered and of its claim, as nobody's
    children (no owner, no managed-by label: the operator has stopped anyway), each pod on the
    namespace's default ServiceAccount (the server's own went with it). Claims come first."""
    import copy

    claims, deployments = [], []
    for i in range(n):
        name, ns = f"floor-{i:03d}", namespaces[i % len(namespaces)]
        claims.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": f"{name}-data", "namespace": ns},
                       "spec": {k: v for k, v in claim["spec"].items() if k in ("accessModes", "resources", "storageClassName", "volumeMode")}})
        spec = copy.deepcopy(deployment["spec"])
        labels = {"bench.mlflow-operator.dev/floor": name}
        spec["selector"] = {"matchLabels": labels}
        pod = spec["template"]
        pod["metadata"] = {"labels": labels, "annotations": {**(pod["metadata"].get("annotations") or {}), FLOOR_ANNOTATION: "created"}}
        pod["spec"]["serviceAccountName"] = "default"
        pod["spec"]["automountServiceAccountToken"] = False
        for volume in pod["spec"].get("volumes") or []:
            if "persistentVolumeClaim" in volume:
                volume["persistentVolumeClaim"]["claimName"] = f"{name}-data"
        deployments.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns}, "spec": spec})
    return claims + deployments


def wait_rolled_out(apps, annotation: str, n: int, timeout: float, edit=None) -> float | None:
    """Seconds until N Deployments carrying `annotation` in their pod template were rolled out on
    it, from before `edit` (which makes the change) runs; None when not within `timeout`."""
    started = time.monotonic()
    with RolloutSampler(apps, started, annotation) as sampler:
        if edit:
            edit()
        while len(sampler.rolled_out) < n and time.monotonic() < started + timeout:
            time.sleep(1.0)
    return max(sampler.rolled_out.values()) if len(sampler.rolled_out) >= n else None


def measure_floor(row: "Row", cluster, apps, deployment: dict, claim: dict, namespaces: list[str], timeout: float) -> None:
    """Step 7: the control plane alone rolls out the edit the operator made in step 5."""
    n = row.n
    objects = floor_objects(deployment, claim, namespaces, n)
    kubectl_create(cluster, objects)
    if wait_rolled_out(apps, FLOOR_ANNOTATION, n, timeout) is None:
        row.notes.append(f"floor: the {n} Deployments were not all available within {timeout:g} s")
        return
    names = [(o["metadata"]["name"], o["metadata"]["namespace"]) for o in objects if o["kind"] == "Deployment"]

    def edit(key: str, strategy: dict | None = None):
        def run():
            for name, ns in names:
                body = {"spec": {"template": {"metadata": {"annotations": {key: "1"}}}}}
                if strategy:
                    body["spec"]["strategy"] = strategy
                apps.patch_namespaced_deployment(name, ns, body)
        return run

    row.floor_recreate_s = wait_rolled_out(apps, f"{FLOOR_ANNOTATION}-recreate", n, timeout,
                                           edit(f"{FLOOR_ANNOTATION}-recreate"))
    row.floor_rolling_s = wait_rolled_out(apps, f"{FLOOR_ANNOTATION}-rolling", n, timeout,
                                          edit(f"{FLOOR_ANNOTATION}-rolling", {"type": "RollingUpdate"}))


def kubectl_create(cluster, objects: list[dict]) -> None:
    """One POST per object (a client-side apply would GET each first)."""
    for i in range(0, len(objects), 100):
        cluster.kubectl("create", "-f", "-", timeout=300,
                        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects[i:i + 100]}))


def measure(n: int, args) -> Row:
    row = Row(n=n, namespaces=max(1, n // 10))
    work = Path(tempfile.mkdtemp(prefix=f"bench-operator-{n}-"))
    # A node runs at most 110 pods (the kubelet's default, which kwok's fake nodes copy): one fake
    # node per hundred servers and one spare, as a cluster of that size would have.
    cluster = start(fake_nodes=tuple(f"kwok-node-{i}" for i in range(n // 100 + 1)))
    provisioner = None
    ops = []
    try:
        from kubernetes import client as k8s

        install_crds(cluster)
        if args.optional_crds:  # the kinds the operator then also renders for and watches
            cluster.install_gateway_api_crds()
            cluster.install_servicemonitor_crd()
        install_chart_rbac(cluster)
        provisioner = StaticProvisioner(cluster, work / "volumes").start()
        api = k8s.CustomObjectsApi(cluster.api_client())
        apps = k8s.AppsV1Api(cluster.api_client())
        namespaces = [f"team-{i:03d}" for i in range(row.namespaces)]
        kubectl_create(cluster, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces])
        for ns in namespaces:  # the namespaces' default ServiceAccounts, before pods are asked for
            deadline = time.monotonic() + 60
            while cluster.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode and time.monotonic() < deadline:
                time.sleep(0.2)
        op_args = ("--resync-seconds", "60", *args.operator_arg)
        (work / "op1").mkdir()
        op = start_operator(cluster, work / "op1", op_args)
        ops.append(op)

        servers = [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrackingServer",
                    "metadata": {"name": f"server-{i:03d}", "namespace": namespaces[i % row.namespaces]}, "spec": {}}
                   for i in range(n)]
        t0, t0_wall = time.monotonic(), audit.now()
        latency: dict[str, float] = {}
        with profiled(args.profile, f"n{n}-create", op.proc.pid):
            kubectl_create(cluster, servers)
            row.created_s = time.monotonic() - t0
            ready = wait_all_ready(api, n, t0, args.timeout, latencies=latency)
        converged_wall = audit.now()
        note_memory(row, "converged", op.proc.pid)
        row.all_ready_s = max(ready.values()) if len(ready) >= n else float("nan")
        if len(ready) < n:
            row.notes.append(f"only {len(ready)}/{n} Ready within {args.timeout:g} s")
        row.ready_p50_s = percentile(list(latency.values()), 0.5)
        row.ready_p95_s = percentile(list(latency.values()), 0.95)
        row.ready_steps = ready_steps(cluster)
        counts = reconcile_counts(op.metrics_url)
        row.passes = int(sum(counts.values()))
        row.failed_passes = int(counts.get("error", 0))
        row.convergence_requests = dict(audit.count_by_verb(cluster.audit_log, OPERATOR_USER, t0_wall, converged_wall))
        row.convergence_by_resource = by_resource(cluster.audit_log, t0_wall, converged_wall)

        # Nothing changes: what does the operator do in a minute?
        cpu_before = proc_cpu_seconds(op.proc.pid)
        with profiled(args.profile, f"n{n}-idle", op.proc.pid, args.idle_seconds):
            time.sleep(args.idle_seconds)
        idle_cpu = proc_cpu_seconds(op.proc.pid) - cpu_before
        note_memory(row, "idle minute", op.proc.pid)
        idle = audit.count_by_verb(cluster.audit_log, OPERATOR_USER, converged_wall, audit.now())
        row.idle_writes = sum(v for k, v in idle.items() if k in audit.WRITE_VERBS)
        row.idle_reads = sum(v for k, v in idle.items() if k in audit.READ_VERBS)
        row.idle_watches = idle.get("watch", 0)
        row.idle_cpu_percent = 100 * idle_cpu / args.idle_seconds
        # The first minute after convergence holds each server's first resync (a whole pass that
        # finds nothing to do, after which the server is settled); the next minute is the steady state.
        cpu_before = proc_cpu_seconds(op.proc.pid)
        with profiled(args.profile, f"n{n}-settled", op.proc.pid, args.idle_seconds):
            time.sleep(args.idle_seconds)
        row.settled_cpu_percent = 100 * (proc_cpu_seconds(op.proc.pid) - cpu_before) / args.idle_seconds

        # A restart over converged objects.
        row.cpu_seconds += proc_cpu_seconds(op.proc.pid)
        row.peak_rss_mb = max(row.peak_rss_mb, proc_peak_rss_mb(op.proc.pid))
        stop_operator(op)
        restarted_wall = audit.now()
        (work / "op2").mkdir()
        op = start_operator(cluster, work / "op2", op_args)
        ops.append(op)
        time.sleep(args.idle_seconds)
        after = audit.count_by_verb(cluster.audit_log, OPERATOR_USER, restarted_wall, audit.now())
        note_memory(row, "restarted, a minute on", op.proc.pid)
        row.restart_writes = sum(v for k, v in after.items() if k in audit.WRITE_VERBS)
        row.restart_reads = sum(v for k, v in after.items() if k in audit.READ_VERBS)

        # One pod-template edit of every server.
        generations = {}
        for ts in api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]:
            generations[f"{ts['metadata']['namespace']}/{ts['metadata']['name']}"] = ts["metadata"]["generation"]
        t_edit, t_edit_wall = time.monotonic(), audit.now()
        with RolloutSampler(apps, t_edit, EDIT_ANNOTATION) as rollouts, profiled(args.profile, f"n{n}-edit", op.proc.pid):
            for ts in servers:
                api.patch_namespaced_custom_object(GROUP, VERSION, ts["metadata"]["namespace"], PLURAL, ts["metadata"]["name"],
                                                   {"spec": {"podTemplate": {"annotations": {EDIT_ANNOTATION: "1"}}}})
            edited = wait_all_ready(api, n, t_edit, args.timeout, min_generation=generations)
        row.edit_by_resource = by_resource(cluster.audit_log, t_edit_wall, audit.now())
        if len(rollouts.applied) >= n:
            row.edit_applied_s = max(rollouts.applied.values())
        if len(rollouts.rolled_out) >= n:
            row.edit_rolled_out_s = max(rollouts.rolled_out.values())
        row.reconverge_s = max(edited.values()) if len(edited) >= n else None
        note_memory(row, "edit re-converged", op.proc.pid)
        if len(edited) < n:
            row.notes.append(f"only {len(edited)}/{n} re-converged within {args.timeout:g} s")

        # What step 7 copies: one rendered Deployment and its claim, as the operator made them.
        api_client = cluster.api_client()
        sample = api_client.sanitize_for_serialization(apps.list_namespaced_deployment(namespaces[0]).items[0])
        claim_name = next(v["persistentVolumeClaim"]["claimName"] for v in sample["spec"]["template"]["spec"]["volumes"]
                          if "persistentVolumeClaim" in v)
        sample_claim = api_client.sanitize_for_serialization(
            k8s.CoreV1Api(api_client).read_namespaced_persistent_volume_claim(claim_name, namespaces[0]))

        # Delete them all.
        t_delete = time.monotonic()
        cluster.kubectl("delete", "trackingservers", "--all", "--all-namespaces", "--wait=false", timeout=300)
        deadline = t_delete + args.timeout
        while time.monotonic() < deadline:
            left = len(api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"])
            deployments = sum(len(apps.list_namespaced_deployment(ns).items) for ns in namespaces) if not left else 1
            if not left and not deployments:
                row.delete_s = time.monotonic() - t_delete
                break
            time.sleep(1.0)
        row.cpu_seconds += proc_cpu_seconds(op.proc.pid)
        row.peak_rss_mb = max(row.peak_rss_mb, proc_peak_rss_mb(op.proc.pid))
        note_memory(row, "deleted", op.proc.pid)
        stop_operator(op)
        if not args.no_floor:
            measure_floor(row, cluster, apps, sample, sample_claim, namespaces, args.timeout)
        if provisioner.errors:
            row.notes.append(f"provisioner errors: {provisioner.errors[:2]}")
    finally:
        for op in ops:
            if op is not None:
                stop_operator(op)
        if provisioner:
            provisioner.stop()
        cluster.stop()
    return row


def cpu_calibration_ms() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 5), as bench/server.py prints it."""
    import timeit

    return min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) * 1000


def fmt(value, unit: str = "", digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def report(rows: list[Row], calibration: float, load: tuple[float, float, float], optional_crds: bool = False) -> None:
    print()
    print(f"Operator benchmark: {os.cpu_count()} cores, CPU calibration {calibration:.0f} ms "
          f"(2000 x sum(range(1000)); a fast idle core: about 15-20), load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) at the start")
    crds = "with the Gateway API and ServiceMonitor CRDs" if optional_crds else "without the optional (Gateway API, ServiceMonitor) CRDs"
    print(f"quickstart servers over N/10 namespaces, kwok pods, --resync-seconds 60, {crds}; requests counted from the audit log")
    print()
    header = ["", *[f"N={r.n}" for r in rows], "target (N=500)", "controller-runtime anchor (N=500)"]
    table = [
        ("all Ready after creation", [fmt(r.all_ready_s, " s") for r in rows], "<= anchor", "146 s"),
        ("per object p50 / p95", [f"{fmt(r.ready_p50_s, ' s')} / {fmt(r.ready_p95_s, ' s')}" for r in rows], "", "p50 124 s"),
        ("  the N created (kubectl create) in", [fmt(r.created_s, " s") for r in rows], "", ""),
        *((f"  {label}: p50 / p95 / max", [" / ".join(fmt(v, " s", 0) for v in r.ready_steps[label]) if label in r.ready_steps else "-"
                                           for r in rows], "", "") for label, *_ in READY_STEPS),
        ("reconcile passes that failed", [f"{r.failed_passes} of {r.passes}" for r in rows], "0", ""),
        ("operator requests during convergence", [", ".join(f"{k} {v}" for k, v in sorted(r.convergence_requests.items())) or "0" for r in rows], "", ""),
        ("operator writes in the 60 s after convergence", [fmt(r.idle_writes) for r in rows], "0", "~315"),
        ("operator reads (get/list) in that minute", [f"{r.idle_reads} (+{r.idle_watches} watch)" for r in rows], "only watches", ""),
        ("operator CPU in that minute", [fmt(r.idle_cpu_percent, " % of a core", 2) for r in rows], "<= 1 %", ""),
        ("operator CPU in the minute after (settled)", [fmt(r.settled_cpu_percent, " % of a core", 2) for r in rows], "<= 1 %", ""),
        ("operator writes in the 60 s after a restart", [f"{r.restart_writes} (reads {r.restart_reads})" for r in rows], "0", "~1,570"),
        ("re-converged after a pod-template edit of all", [fmt(r.reconverge_s, " s") for r in rows], "<= anchor", "103 s"),
        ("  of which: every edit applied by the operator", [fmt(r.edit_applied_s, " s") for r in rows], "", ""),
        ("  then every Deployment rolled out on it", [fmt(r.edit_rolled_out_s, " s") for r in rows], "", ""),
        ("  the control plane alone: the same edit of N rendered Deployments (Recreate)", [fmt(r.floor_recreate_s, " s") for r in rows], "", ""),
        ("  the same as RollingUpdate (the anchor's: no volume)", [fmt(r.floor_rolling_s, " s") for r in rows], "", ""),
        ("all deleted (servers and Deployments)", [fmt(r.delete_s, " s") for r in rows], "", ""),
        ("operator peak RSS", [fmt(r.peak_rss_mb, " MB", 0) for r in rows], "<= 150 MB", "69 MB"),
        ("operator CPU seconds (whole run)", [fmt(r.cpu_seconds, " s") for r in rows], "", "11 s"),
    ]
    widths = [max(len(header[0]), *(len(t[0]) for t in table))]
    for i in range(len(rows)):
        widths.append(max(len(header[i + 1]), *(len(t[1][i]) for t in table)))
    widths += [max(len(header[-2]), *(len(t[2]) for t in table)), max(len(header[-1]), *(len(t[3]) for t in table))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for name, values, target, anchor in table:
        cells = [name, *values, target, anchor]
        print("| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |")
    for r in rows:
        for label, counts in (("convergence", r.convergence_by_resource), ("re-convergence", r.edit_by_resource)):
            if counts:
                print(f"N={r.n} operator requests during {label}: " + ", ".join(f"{k} {v}" for k, v in list(counts.items())[:12]))
        if r.rss_by_phase:
            print(f"N={r.n} operator memory (peak so far / now): " + ", ".join(
                f"{phase} {peak:.0f}/{now:.0f} MB" for phase, peak, now in r.rss_by_phase))
        for note in r.notes:
            print(f"note N={r.n}: {note}")
    print()
    for r in rows:
        ratio = ""
        if r.n == 500 and r.all_ready_s == r.all_ready_s:
            ratio = f" all_ready_vs_anchor={r.all_ready_s / ANCHOR_500['all_ready_s']:.2f}x"
            if r.reconverge_s:
                ratio += f" reconverge_vs_anchor={r.reconverge_s / ANCHOR_500['reconverge_s']:.2f}x"
        if r.floor_recreate_s:
            ratio += f" floor_recreate_s={r.floor_recreate_s:.1f} floor_rolling_s={fmt(r.floor_rolling_s)}"
        print(f"bench-operator: N={r.n} all_ready_s={fmt(r.all_ready_s)} failed_passes={r.failed_passes} "
              f"idle_writes={r.idle_writes} restart_writes={r.restart_writes} reconverge_s={fmt(r.reconverge_s)} "
              f"peak_rss_mb={fmt(r.peak_rss_mb, digits=0)} idle_cpu_pct={fmt(r.idle_cpu_percent, digits=2)} "
              f"settled_cpu_pct={fmt(r.settled_cpu_percent, digits=2)}{ratio}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 250, 500], help="numbers of TrackingServers")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=1200.0, help="bound of each wait")
    parser.add_argument("--profile", metavar="DIR", help="py-spy profiles of the creation, idle minutes and edit into DIR (needs py-spy)")
    parser.add_argument("--optional-crds", action="store_true",
                        help="install the Gateway API and ServiceMonitor CRDs first (most clusters serve neither)")
    parser.add_argument("--no-floor", action="store_true", help="skip step 7, the control plane's own time to roll the edit out")
    parser.add_argument("--operator-arg", action="append", default=[], metavar="ARG",
                        help="an extra argument of `mlflow-operator run` (repeat: --operator-arg=--workers --operator-arg=16)")
    args = parser.parse_args()
    # SIGTERM ends the run through the finally blocks: operators, provisioner and cluster stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load = os.getloadavg()
    calibration = cpu_calibration_ms()
    rows = []
    for n in args.n:
        print(f"bench-operator: N={n} ...", file=sys.stderr, flush=True)
        rows.append(measure(n, args))
        report(rows, calibration, load, args.optional_crds)  # a partial table after each N: a long run can be cut short
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
