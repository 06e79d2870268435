"""Pure parts of the reconciler: conditions, rollout observation, readiness summary."""

from mlflow_operator.controller.conditions import Condition, merge_conditions
from mlflow_operator.controller.migrations import job_state
from dataclasses import replace

from mlflow_operator.controller.observe import availability, degraded, pod_problem, progressing, rollout_of
from mlflow_operator.controller.reachability import unsupported_database
from mlflow_operator.controller.reconcile import secret_key_refs, summarize


def test_transition_time_moves_only_when_status_changes():
    first = merge_conditions([], [Condition("Available", False, "NoPodReady", "0/1")], 1, now="2026-01-01T00:00:00Z")
    same = merge_conditions(first, [Condition("Available", False, "NoPodReady", "still 0/1")], 2, now="2026-01-01T00:01:00Z")
    flipped = merge_conditions(same, [Condition("Available", True, "MinimumReplicasAvailable", "1/1")], 3, now="2026-01-01T00:02:00Z")
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same[0]["message"] == "still 0/1" and same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T00:02:00Z"
    assert flipped[0]["status"] == "True"


def test_conditions_not_observed_are_kept_and_ready_comes_first():
    old = merge_conditions([], [Condition("BackendReachable", False, "Timeout", "db:5432")], 1)
    new = merge_conditions(old, [Condition("Ready", False, "Timeout", "x")], 2)
    assert [c["type"] for c in new] == ["Ready", "BackendReachable"]
    assert new[1]["observedGeneration"] == 1


def _conds(**statuses):
    return merge_conditions([], [Condition(t, s, "R" + t, f"{t} message") for t, s in statuses.items()], 1)


def test_ready_needs_every_summarized_condition():
    ok = dict(Reconciled=True, MigrationsApplied=True, Available=True, BackendReachable=True, ArtifactStoreReachable=True)
    assert summarize(_conds(**ok)).status is True
    down = summarize(_conds(**{**ok, "BackendReachable": False}))
    assert down.status is False and down.reason == "RBackendReachable" and "BackendReachable" in down.message
    missing = dict(ok)
    del missing["MigrationsApplied"]
    assert summarize(_conds(**missing)).status is None
    rolling = summarize(_conds(**ok, Progressing=True))
    assert rolling.status is False and rolling.reason == "RollingOut"


def _deployment(replicas=2, ready=2, available=2, updated=2, total=2, generation=3, observed=3, version="3.18.0"):
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app.kubernetes.io/version": version}}}},
        "status": {"readyReplicas": ready, "availableReplicas": available, "updatedReplicas": updated,
                   "replicas": total, "observedGeneration": observed},
    }


def test_rollout_states():
    done = rollout_of(_deployment(), "ts")
    assert done.rolled_out and done.version == "3.18.0"
    assert not rollout_of(_deployment(observed=2), "ts").rolled_out  # controller has not seen the new spec
    assert not rollout_of(_deployment(updated=1, total=3), "ts").rolled_out  # old pods still there
    rollouts = {"tracking": rollout_of(_deployment(ready=0, available=0), "ts")}
    assert availability(rollouts, None).status is False
    assert availability(rollouts, None).reason == "NoPodReady"
    assert degraded(rollouts, None).reason == "SomePodsNotReady"
    assert progressing({"tracking": rollout_of(_deployment(updated=1), "ts")}, None).status is True
    assert availability({"tracking": rollout_of(None, "ts")}, None).reason == "DeploymentMissing"


def _pod(name: str, created: str, statuses: list[dict], init: list[dict] | None = None, conditions=None) -> dict:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "status": {"phase": "Running", "containerStatuses": statuses, "initContainerStatuses": init or [],
                       "conditions": conditions or []}}


REFUSAL = ("INFO waiting for database db.team-a.svc:5432\n"
           "mlflow-entrypoint serve: refusing to start: tracking database db.team-a.svc:5432/mlflow has no "
           "MLflow schema (run the migration Job)\n")


def test_pod_problem_names_the_crash_and_the_entrypoint_reason():
    crashing = {"name": "mlflow", "ready": False, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
                "lastState": {"terminated": {"exitCode": 3, "reason": "Error", "message": REFUSAL}}}
    starting = {"name": "mlflow", "ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}}
    problem = pod_problem([_pod("ts-old", "2026-01-01T00:00:00Z", [crashing]), _pod("ts-new", "2026-01-01T00:05:00Z", [starting])])
    assert problem.reason == "CrashLoopBackOff"
    assert problem.message.startswith("container mlflow of pod ts-old: CrashLoopBackOff (last exit code 3): ")
    assert "has no MLflow schema (run the migration Job)" in problem.message and len(problem.message) < 520
    # A pod that is merely starting is not a problem; neither is one whose probe has not passed yet.
    running = {"name": "mlflow", "ready": False, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
    assert pod_problem([_pod("a", "t", [starting]), _pod("b", "t", [running])]) is None
    assert pod_problem([]) is None

    pull = {"name": "mlflow", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x:9\""}}}
    assert pod_problem([_pod("p", "t", [pull])]).reason == "ImagePullBackOff"
    init_failed = {"name": "wait-for-backend", "state": {"terminated": {"exitCode": 1, "message": "mlflow-entrypoint wait-for-backend: gave up after 60 s on db:5432"}}}
    failed = pod_problem([_pod("p", "t", [starting], init=[init_failed])])
    assert failed.reason == "ContainerFailed" and "wait-for-backend" in failed.message and "gave up after 60 s" in failed.message
    # MLflow's own log lines (a traceback with a URI) never reach status: only the entrypoint's, redacted.
    traceback = ("Traceback (most recent call last):\n  File \"sqlalchemy/engine.py\"\n"
                 "sqlalchemy.exc.OperationalError: connection to postgresql://mlflow:hunter2pw@db:5432/mlflow failed\n"
                 "SELECT secret_column FROM experiments\n")
    crashed = {"name": "mlflow", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
               "lastState": {"terminated": {"exitCode": 1, "message": traceback}}}
    message = pod_problem([_pod("p", "t", [crashed])]).message
    assert "hunter2pw" not in message and "Traceback" not in message and "SELECT" not in message, message
    with_own = dict(crashed, lastState={"terminated": {"exitCode": 1, "message": traceback + REFUSAL}})
    assert pod_problem([_pod("p", "t", [with_own])]).message.endswith("has no MLflow schema (run the migration Job)")
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": "0/3 nodes are available: 3 Insufficient memory."}
    assert pod_problem([_pod("p", "t", [], conditions=[unschedulable])]).message.endswith("3 Insufficient memory.")


def test_availability_carries_the_pod_problem():
    stuck = rollout_of(_deployment(ready=0, available=0), "ts")
    crash = pod_problem([_pod("ts-1", "t", [{"name": "mlflow", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                             "lastState": {"terminated": {"exitCode": 3, "message": REFUSAL}}}])])
    cond = availability({"tracking": replace(stuck, problem=crash)}, None)
    assert cond.status is False and cond.reason == "CrashLoopBackOff"
    assert cond.message.startswith("0/2 tracking pods ready; container mlflow of pod ts-1") and "no MLflow schema" in cond.message
    assert availability({"tracking": stuck}, None).reason == "NoPodReady"


def test_job_states():
    assert job_state({"status": {}}) == "Running"
    assert job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == "Succeeded"
    assert job_state({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}) == "Failed"
    assert job_state({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}) == "Running"


def test_only_databases_the_image_can_drive_are_accepted():
    for ok in ("postgresql://u:p@db/mlflow", "postgresql+psycopg2://db/x", "postgres://db/x", "mysql+pymysql://db/x", "mysql://db/x"):
        assert unsupported_database(ok) is None, ok
    problem = unsupported_database("mssql+pyodbc://u:s3cr3t@sql/mlflow")
    assert problem and problem.startswith("mssql://") and "postgresql://" in problem and "s3cr3t" not in problem
    assert "mysql://" in unsupported_database("mariadb://db/x")
    assert unsupported_database("db.team.svc:5432/mlflow")


def test_secret_key_refs_collects_env_and_volumes():
    manifests = [
        {"kind": "Deployment", "spec": {"template": {"spec": {
            "initContainers": [{"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "uri"}}}]}],
            "containers": [{"env": [
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}},
                {"name": "C", "valueFrom": {"secretKeyRef": {"name": "opt", "key": "k", "optional": True}}},
                {"name": "D", "value": "plain"},
            ]}],
            "volumes": [{"name": "gcs", "secret": {"secretName": "gcs", "items": [{"key": "key.json", "path": "c.json"}]}}],
        }}}},
        {"kind": "Service", "spec": {}},
    ]
    assert secret_key_refs(manifests) == {"db": {"uri"}, "s3": {"id"}, "gcs": {"key.json"}}


def test_not_ready_pods_are_looked_at_again_soon():
    from mlflow_operator.controller.reconcile import pods_not_ready

    assert pods_not_ready([Condition("Available", False, "CrashLoopBackOff", "0/1")])
    assert pods_not_ready([Condition("Available", True, "MinimumReplicasAvailable", "1/2"),
                           Condition("Degraded", True, "SomePodsNotReady", "1/2")])
    assert not pods_not_ready([Condition("Available", True, "MinimumReplicasAvailable", "2/2"),
                               Condition("Degraded", False, "AsExpected", "")])
    assert not pods_not_ready([Condition("Available", False, "WaitingForMigrations", "")])


def _claim(requested: str, capacity: str | None = None) -> dict:
    status = {"capacity": {"storage": capacity}} if capacity else {}
    return {"metadata": {"name": "team-data"}, "spec": {"resources": {"requests": {"storage": requested}}}, "status": status}


def test_volume_claims_only_grow():
    from mlflow_operator.controller.volumes import size_decision

    grow, cond = size_decision(_claim("20Gi"), _claim("10Gi", "10Gi"))
    assert grow and cond.reason == "ExpansionRequested" and "10Gi to 20Gi" in cond.message
    grow, cond = size_decision(_claim("5Gi"), _claim("10Gi", "10Gi"))
    assert not grow and cond.status is False and cond.reason == "ShrinkNotPossible" and "10Gi" in cond.message
    # units compare as quantities, not strings
    assert size_decision(_claim("10240Mi"), _claim("10Gi"))[1].reason == "AsRequested"
    assert size_decision(_claim("1Ti"), _claim("900Gi"))[0] is True
    grow, cond = size_decision(_claim("20Gi"), _claim("20Gi", "10Gi"))
    assert not grow and cond.reason == "ExpansionInProgress"


def test_cluster_domain_is_read_from_the_pods_dns_search_path(tmp_path):
    from mlflow_operator.controller.main import cluster_domain

    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search mlflow-operator-system.svc.corp.internal svc.corp.internal corp.internal\n"
                      "nameserver 10.96.0.10\noptions ndots:5\n")
    assert cluster_domain(None, resolv) == "corp.internal"
    assert cluster_domain("other.domain.", resolv) == "other.domain"  # the flag wins
    resolv.write_text("search example.com\nnameserver 192.0.2.1\n")  # not in a pod: the default
    assert cluster_domain(None, resolv) == "cluster.local"
    assert cluster_domain(None, tmp_path / "missing") == "cluster.local"


def test_progressing_is_complete_only_when_every_pod_serves():
    from mlflow_operator.controller.observe import PodProblem

    missing = progressing({"tracking": rollout_of(None, "ts")}, None)
    assert (missing.status, missing.reason) == (True, "Creating") and "does not exist yet" in missing.message
    starting = progressing({"tracking": rollout_of(_deployment(replicas=1, ready=0, available=0, updated=1, total=1), "ts")}, None)
    assert (starting.status, starting.reason, starting.message) == (True, "PodsStarting", "Deployment ts: 0/1 pods ready")
    stuck_rollout = replace(rollout_of(_deployment(replicas=1, ready=0, available=0, updated=1, total=1), "ts"),
                            problem=PodProblem("Unschedulable", "pod ts-1: 0/1 nodes are available"))
    stuck = progressing({"tracking": stuck_rollout}, None)
    assert (stuck.status, stuck.reason) == (False, "Unschedulable") and "0/1 pods ready; pod ts-1: 0/1 nodes" in stuck.message
    done = progressing({"tracking": rollout_of(_deployment(), "ts")}, None)
    assert (done.status, done.reason) == (False, "Complete")
    # Split: both Deployments must serve
    both = {"tracking": rollout_of(_deployment(), "ts"),
            "artifacts": rollout_of(_deployment(replicas=2, ready=1, available=1), "ts-artifacts")}
    assert progressing(both, None).reason == "PodsStarting" and "ts-artifacts: 1/2" in progressing(both, None).message


def test_ready_is_not_taken_away_by_a_restarting_replica_but_by_a_rollout():
    base = _conds(**{t: True for t in ("Reconciled", "MigrationsApplied", "Available", "BackendReachable", "ArtifactStoreReachable")})
    starting = merge_conditions(base, [Condition("Progressing", True, "PodsStarting", "Deployment ts: 1/2 pods ready")], 1)
    assert summarize(starting).status is True
    rolling = merge_conditions(base, [Condition("Progressing", True, "RollingOut", "1/2 updated")], 1)
    assert summarize(rolling).status is False


def test_an_unbound_claim_passes_on_the_pv_controllers_reason():
    from mlflow_operator.controller.observe import claim_problem

    claim = {"metadata": {"name": "ts-data"}, "status": {"phase": "Pending"}}
    events = [  # the PV controller posts FailedBinding as a Normal event
        {"type": "Normal", "reason": "FailedBinding", "lastTimestamp": "2026-01-01T00:00:09Z",
         "message": "no persistent volumes available for this claim and no storage class is set"},
        {"type": "Warning", "reason": "ProvisioningFailed", "lastTimestamp": "2026-01-01T00:00:05Z", "message": "older"},
        {"type": "Normal", "reason": "FailedBinding", "lastTimestamp": "2026-01-01T00:00:01Z", "message": "oldest"},
    ]
    assert claim_problem(claim, events) == ("PersistentVolumeClaim ts-data: FailedBinding: no persistent volumes "
                                            "available for this claim and no storage class is set")
    assert claim_problem(claim, []) == "PersistentVolumeClaim ts-data is Pending"
    assert claim_problem({**claim, "status": {"phase": "Bound"}}, events) is None
    assert claim_problem(None, events) is None


def test_warning_events_once_per_pod_problem():
    from mlflow_operator.controller.reconcile import announce_transitions

    def events(previous, current):
        posted = []
        announce_transitions(merge_conditions([], previous, 1), merge_conditions([], current, 1),
                             lambda type_, reason, message: posted.append((type_, reason, message)))
        return posted

    pull = Condition("Available", False, "ErrImagePull", "0/1 tracking pods ready; container mlflow: ErrImagePull")
    backoff = Condition("Available", False, "ImagePullBackOff", "0/1 tracking pods ready; container mlflow: ImagePullBackOff")
    unschedulable = Condition("Available", False, "Unschedulable", "0/1 tracking pods ready; pod ts-1: 0/1 nodes")
    starting = Condition("Available", False, "NoPodReady", "0/1 tracking pods ready")
    assert events([starting], [pull]) == [("Warning", "ErrImagePull", "Available: " + pull.message)]
    assert events([pull], [backoff]) == []  # the kubelet's back-off flip is the same problem
    assert events([], [unschedulable]) == [("Warning", "Unschedulable", "Available: " + unschedulable.message)]
    assert events([unschedulable], [unschedulable]) == []
    assert events([], [starting]) == []  # pods that are starting are no problem


def test_text_log_lines_name_the_object_and_json_lines_carry_it():
    import json
    import logging

    from kopf._core.actions.loggers import make_formatter  # what kopf.configure builds from these options
    from mlflow_operator.controller.main import logging_options

    def formatted(log_format: str) -> str:
        options = logging_options(log_format, "info")
        formatter = make_formatter(**{k: options[k] for k in ("log_format", "log_prefix", "log_refkey")})
        record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Pruned: %s", ("Ingress/x",), None)
        record.k8s_ref = {"namespace": "team-a", "name": "mlflow", "kind": "TrackingServer"}
        return formatter.format(record)

    assert formatted("plain") == "[team-a/mlflow] Pruned: Ingress/x"
    assert formatted("full").endswith("[team-a/mlflow] Pruned: Ingress/x")
    line = json.loads(formatted("json"))
    assert line["message"] == "Pruned: Ingress/x" and line["object"]["name"] == "mlflow"
    assert line["object"]["namespace"] == "team-a"


def test_an_absent_optional_api_is_logged_once():
    import logging

    from mlflow_operator.controller.main import _Once

    once = _Once("Unresolved resources cannot be served")

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf._core.reactor.observation", logging.WARNING, __file__, 1, message, (), None)

    unresolved = "Unresolved resources cannot be served (try creating their CRDs): httproutes.v1.gateway.networking.k8s.io"
    assert [once.filter(record(unresolved)) for _ in range(3)] == [True, False, False]
    assert once.filter(record(unresolved + ", servicemonitors.v1.monitoring.coreos.com"))  # news is said
    assert all(once.filter(record("something else")) for _ in range(2))


def test_default_image_takes_a_mirrors_repository_or_a_full_reference():
    from mlflow_operator.constants import DEFAULT_IMAGE, MLFLOW_VERSION
    from mlflow_operator.controller.main import default_image

    assert default_image("mirror.corp:5000/mlflow/mlflow-server") == f"mirror.corp:5000/mlflow/mlflow-server:{MLFLOW_VERSION}"
    assert default_image("mirror.corp/mlflow-server:3.17.2") == "mirror.corp/mlflow-server:3.17.2"
    assert default_image("mirror.corp/mlflow-server@sha256:" + "a" * 64).endswith("a" * 64)
    assert default_image("  ") == DEFAULT_IMAGE


def test_a_pod_waiting_for_a_claim_being_bound_is_starting_not_unschedulable(monkeypatch):
    """A claim under CLAIM_PATIENCE_SECONDS old is being bound: its pod is not a problem yet (no
    Warning, no status write, no LIST of events); after that the claim's reason is reported."""
    import datetime

    from mlflow_operator.api import load_trackingserver
    from mlflow_operator.controller import kube, observe
    from mlflow_operator.render import naming

    ts = load_trackingserver({"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
                              "metadata": {"name": "team", "namespace": "ns"}, "spec": {}})
    name = naming.tracking_name(ts)
    created = datetime.datetime(2026, 12, 2, 12, 0, 0, tzinfo=datetime.timezone.utc)
    labels = naming.selector_labels(ts, naming.TRACKING)
    deployment = {**_deployment(replicas=1, ready=0, available=0, updated=1, total=1), "kind": "Deployment"}
    deployment["metadata"] = {**deployment["metadata"], "name": name, "namespace": "ns", "labels": {kube.INSTANCE_LABEL: "team"}}
    pod = _pod("team-1", "2026-12-02T12:00:01Z", [], conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."}])
    pod["metadata"]["labels"] = {**labels, kube.INSTANCE_LABEL: "team"}
    pod.update(kind="Pod", apiVersion="v1")
    pod["metadata"]["namespace"] = "ns"
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {"phase": "Pending"},
             "metadata": {"name": naming.volume_claim_name(ts), "namespace": "ns", "creationTimestamp": "2026-12-02T12:00:00Z",
                          "labels": {kube.INSTANCE_LABEL: "team"}}}
    view = kube.PassView("ns", "team", {"Deployment", "Pod", "PersistentVolumeClaim"}, [deployment, pod, claim])
    listed = []
    monkeypatch.setattr(observe, "claim_events", lambda *a, **k: listed.append(a) or [
        {"reason": "FailedBinding", "message": "no persistent volumes available for this claim"}])

    def rollout_at(seconds: float):
        monkeypatch.setattr(observe.time, "time", lambda: created.timestamp() + seconds)
        with kube.reading_from(view):
            return observe.observe_rollout(ts, naming.TRACKING, name)[0]

    young = rollout_at(observe.CLAIM_PATIENCE_SECONDS - 1)
    assert young.problem is None and not listed, young
    stuck = rollout_at(observe.CLAIM_PATIENCE_SECONDS + 1)
    assert stuck.problem and stuck.problem.reason == "Unschedulable", stuck
    assert "FailedBinding: no persistent volumes available" in stuck.problem.message and len(listed) == 1
    # a pod unschedulable for another reason is reported at once, however young its claim
    pod["status"]["conditions"][0]["message"] = "0/1 nodes are available: 1 Insufficient cpu."
    other = rollout_at(1)
    assert other.problem and "Insufficient cpu" in other.problem.message, other


def test_a_claims_events_are_read_only_while_it_is_unbound_and_at_most_every_30_seconds():
    from mlflow_operator.controller.observe import CLAIM_EVENTS_SECONDS, claim_events

    calls = []

    def fetch():
        calls.append(1)
        return [{"reason": "FailedBinding", "message": f"call {len(calls)}"}]

    pending = {"metadata": {"name": "ts-data"}, "status": {"phase": "Pending"}}
    assert claim_events("ns", "ts-data", pending, now=100.0, fetch=fetch)[0]["message"] == "call 1"
    assert claim_events("ns", "ts-data", pending, now=110.0, fetch=fetch)[0]["message"] == "call 1"  # reused
    assert claim_events("ns", "ts-data", pending, now=100.0 + CLAIM_EVENTS_SECONDS, fetch=fetch)[0]["message"] == "call 2"
    assert claim_events("ns", "other", pending, now=131.0, fetch=fetch)[0]["message"] == "call 3"  # per claim
    bound = {**pending, "status": {"phase": "Bound"}}
    assert claim_events("ns", "ts-data", bound, now=500.0, fetch=fetch) == [] and len(calls) == 3
    assert claim_events("ns", "ts-data", None, now=500.0, fetch=fetch) == [] and len(calls) == 3
    # unbound again later (a new claim of that name): asked afresh, the old answer forgotten
    assert claim_events("ns", "ts-data", pending, now=501.0, fetch=fetch)[0]["message"] == "call 4"
    # a claim no pass asks about any more (its server deleted) is not kept: "other" was dropped
    from mlflow_operator.controller import observe
    assert set(observe._claim_events) == {("ns", "ts-data")}
