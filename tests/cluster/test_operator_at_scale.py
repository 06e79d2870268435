"""The operator with many TrackingServers at once: correctness properties at scale (timings are
`make bench-operator`'s job, not a test's).
"""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.operator_fixtures import get_json, wait_for

OPTIONAL_GROUPS = ("gateway.networking.k8s.io", "monitoring.coreos.com")


@pytest.fixture
def without_optional_crds(cluster):
    """Most clusters serve neither the Gateway API nor ServiceMonitors, so every pass meets kinds the
    cluster does not serve. Earlier tests of this session installed them: they go for this test
    (the tests that need them install them again)."""
    crds = get_json(cluster, "crd")["items"]
    names = [c["metadata"]["name"] for c in crds if c["spec"]["group"] in OPTIONAL_GROUPS]
    if names:
        cluster.kubectl("delete", "crd", *names, "--wait=true", timeout=180)
    wait_for("the optional API groups to leave discovery",
             lambda: not any(g in cluster.kubectl("api-versions").stdout for g in OPTIONAL_GROUPS), timeout=60)


def quickstart(namespace: str, name: str) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
            "metadata": {"name": name, "namespace": namespace}, "spec": {}}


def create_all(cluster, objects: list[dict]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def not_ready(cluster, namespace: str) -> list[str]:
    items = get_json(cluster, "trackingservers", "-n", namespace)["items"]
    out = []
    for ts in items:
        conds = {c["type"]: c for c in (ts.get("status") or {}).get("conditions") or []}
        ready = conds.get("Ready", {})
        if ready.get("status") != "True" or ready.get("observedGeneration") != ts["metadata"]["generation"]:
            out.append(ts["metadata"]["name"])
    return out


def reconcile_counts(metrics_url: str, namespace: str) -> dict[str, float]:
    """mlflow_operator_reconciles_total of one namespace, by result."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mlflow_operator_reconciles_total{") and f'namespace="{namespace}"' in line:
            result = line.split('result="', 1)[1].split('"', 1)[0]
            counts[result] = counts.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def failed_pass_lines(op, since_offset: int, namespace: str) -> list[str]:
    """The operator's log lines of passes that failed with an exception of its own (not an answer
    of the API server), for this namespace's objects."""
    with open(op.log_path, "rb") as log:
        log.seek(since_offset)
        lines = log.read().decode(errors="replace").splitlines()
    return [line for line in lines if "reconcile failed" in line and namespace in line]


SERVERS = 24


def test_no_pass_fails_without_a_cause_in_the_cluster(cluster, operator, namespace, without_optional_crds):
    """Many servers reconciled at once, by concurrent passes, on a cluster without the optional CRDs:
    every pass must succeed. (The DynamicClient's discovery cache, shared by the passes' threads,
    failed half of them with KeyError 'resources' / 'apis'.)"""
    offset = operator.log_path.stat().st_size
    create_all(cluster, [quickstart(namespace, f"team-{i:02d}") for i in range(SERVERS)])
    wait_for(f"{SERVERS} TrackingServers Ready", lambda: not not_ready(cluster, namespace), timeout=240, interval=2,
             explain=lambda: f"not ready: {not_ready(cluster, namespace)}\n{operator.logs(30)}")
    time.sleep(12)  # two more resync periods (the tests run the operator with --resync-seconds 5)

    counts = reconcile_counts(operator.metrics_url, namespace)
    assert counts.get("success", 0) >= 2 * SERVERS, counts  # the passes this test is about did run
    failed = failed_pass_lines(operator, offset, namespace)
    assert not failed and not counts.get("error"), (
        f"{len(failed)} passes failed without a cause in the cluster ({counts}):\n" + "\n".join(failed[:5]))


OPERATOR_USER = "system:serviceaccount:mlflow-operator-system:mlflow-operator"
QUIET_SECONDS = 60


def operator_writes(cluster, namespace: str, since, until=None) -> list:
    return [r for r in cluster.audit_requests(OPERATOR_USER, since, until) if r.write and r.namespace == namespace]


def describe(requests) -> str:
    return "\n".join(f"  {r.time:%H:%M:%S.%f} {r.verb} {r.resource} {r.name} -> {r.code}" for r in requests[:20])


def test_no_writes_when_nothing_changes_nor_after_a_restart(cluster, operator, namespace):
    """Converged servers cost the API server nothing: in a minute after convergence (a dozen resyncs
    of each at the tests' --resync-seconds 5, and a pass of each after another client annotated its
    Service, a field the operator does not own), and in a minute after a restart of the operator
    over them, it writes nothing (counted from the API server's audit log). It used to server-side
    apply every child of every server on every pass."""
    from localcluster import audit

    from tests.operator_fixtures import operator_stopped

    create_all(cluster, [quickstart(namespace, f"quiet-{i}") for i in range(8)])
    wait_for("8 TrackingServers Ready", lambda: not not_ready(cluster, namespace), timeout=180, interval=1,
             explain=lambda: f"not ready: {not_ready(cluster, namespace)}\n{operator.logs(30)}")
    converged = audit.now()
    passes = reconcile_counts(operator.metrics_url, namespace).get("success", 0)
    time.sleep(QUIET_SECONDS / 2)
    cluster.kubectl("annotate", "services", "--all", "-n", namespace, "example.com/touched-by=someone-else")
    time.sleep(QUIET_SECONDS / 2)
    writes = operator_writes(cluster, namespace, converged)
    touched = reconcile_counts(operator.metrics_url, namespace).get("success", 0) - passes
    assert not writes, f"{len(writes)} writes in the {QUIET_SECONDS} s after convergence:\n{describe(writes)}"

    with operator_stopped(operator):
        pass
    restarted = audit.now()
    time.sleep(QUIET_SECONDS)
    writes = operator_writes(cluster, namespace, restarted)
    assert not writes, f"{len(writes)} writes in the {QUIET_SECONDS} s after a restart:\n{describe(writes)}"
    assert not not_ready(cluster, namespace)
    assert touched >= 8, f"only {touched} passes after the annotation: the quiet minute proves nothing"
    after_restart = reconcile_counts(operator.metrics_url, namespace).get("success", 0)
    assert after_restart >= 8, f"only {after_restart} passes after the restart: the quiet minute proves nothing"


def test_a_pass_that_only_wrote_status_needs_no_second_look(cluster, operator, namespace):
    """A pass whose one write is its own status leaves nothing to verify: the resyncs after it run no
    pass at all, as after a pass that wrote nothing. (They each ran a whole pass, the first minute
    after a convergence of 500 servers cost 3.2 % of a core for nothing.) Another client edits a
    condition's message, so a pass (on that watch event) restores it with a status write, and only
    that write."""
    servers = [f"look-{i}" for i in range(4)]
    create_all(cluster, [quickstart(namespace, name) for name in servers])
    wait_for("4 TrackingServers Ready", lambda: not not_ready(cluster, namespace), timeout=180, interval=1,
             explain=lambda: f"not ready: {not_ready(cluster, namespace)}\n{operator.logs(30)}")
    last = {"count": -1.0, "since": time.monotonic()}

    def passes_stopped() -> bool:  # no pass for more than a resync period (5 s)
        count = reconcile_counts(operator.metrics_url, namespace).get("success", 0)
        if count != last["count"]:
            last.update(count=count, since=time.monotonic())
        return time.monotonic() - last["since"] > 7
    wait_for("the passes of converged servers to stop", passes_stopped, timeout=90, interval=0.5)

    def reconciled_message(name: str) -> str:
        ts = get_json(cluster, "trackingserver", name, "-n", namespace)
        return next(c["message"] for c in ts["status"]["conditions"] if c["type"] == "Reconciled")
    original = {name: reconciled_message(name) for name in servers}
    for name in servers:
        ts = get_json(cluster, "trackingserver", name, "-n", namespace)
        conditions = [dict(c, message="edited by someone else") if c["type"] == "Reconciled" else c
                      for c in ts["status"]["conditions"]]
        cluster.kubectl("patch", "trackingserver", name, "-n", namespace, "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": {"conditions": conditions}}))
    wait_for("the operator to restore the edited messages",
             lambda: all(reconciled_message(name) == original[name] for name in servers), timeout=30, interval=0.3)
    restored = reconcile_counts(operator.metrics_url, namespace).get("success", 0)
    time.sleep(12)  # two resync periods
    after = reconcile_counts(operator.metrics_url, namespace).get("success", 0)
    assert after == restored, f"{after - restored:g} passes over {len(servers)} servers whose last pass wrote only its status"
