"""Data safety and ownership on the real control plane (issue 12): retention changes, objects the
operator does not own, the migration gate holding the whole desired state, and what status says.
The operator runs with the chart's RBAC; kwok plays the kubelet."""
from __future__ import annotations

import json
import time

import pytest

from tests.cluster.test_operator_reconcile import (  # noqa: F401 - database_listener is a fixture
    create_referenced_secrets,
    database_listener,
    point_s3_endpoint_at,
)
from tests.operator_fixtures import (
    apply_object,
    condition,
    get_json,
    load_example,
    wait_for,
    wait_for_conditions,
)

OWNER_KIND = "TrackingServer"


@pytest.fixture
def operator(cluster, operator_process, volume_provisioner):
    operator_process.assert_alive()
    yield operator_process
    operator_process.assert_alive()
    assert not volume_provisioner.errors, volume_provisioner.errors


def owner_refs(obj: dict) -> list[dict]:
    return [r for r in obj["metadata"].get("ownerReferences") or [] if r["kind"] == OWNER_KIND]


def patch_ts(cluster, namespace: str, name: str, patch, type_: str = "merge") -> None:
    cluster.kubectl("patch", "trackingserver", name, "-n", namespace, f"--type={type_}", "-p", json.dumps(patch))


# ---- finding 1: a retention change reaches the data-bearing children -------------------------------

def sqlite_with_basic_auth(namespace: str, retention: str) -> dict:
    ts = load_example("02-sqlite.yaml", namespace)
    ts["spec"]["retentionPolicy"] = retention
    ts["spec"]["auth"] = {"type": "Basic"}  # generated admin and Flask Secrets, auth DB on the volume
    return ts


def data_objects(cluster, namespace: str, name: str) -> dict[str, dict | None]:
    return {
        "pvc": get_json(cluster, "pvc", f"{name}-data", "-n", namespace),
        "admin": get_json(cluster, "secret", f"{name}-admin", "-n", namespace),
        "flask": get_json(cluster, "secret", f"{name}-flask-secret-key", "-n", namespace),
    }


def test_switch_to_retain_then_delete_keeps_the_data_and_recreate_reattaches(cluster, operator, namespace):
    ts = sqlite_with_basic_auth(namespace, "Delete")
    name = ts["metadata"]["name"]
    apply_object(cluster, ts)
    wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True")
    wait_for("the claim to be bound", lambda: data_objects(cluster, namespace, name)["pvc"]["status"].get("phase") == "Bound")
    before = data_objects(cluster, namespace, name)
    assert all(owner_refs(obj) for obj in before.values()), "retentionPolicy Delete: the data is owned"
    volume = before["pvc"]["spec"]["volumeName"]

    patch_ts(cluster, namespace, name, {"spec": {"retentionPolicy": "Retain"}})
    live = wait_for_conditions(cluster, namespace, name, timeout=60, op=operator, DataRetained="True")
    assert condition(live, "DataRetained")["reason"] == "Retained"
    after = data_objects(cluster, namespace, name)
    for key, obj in after.items():
        assert not owner_refs(obj), f"{key} still owned by the TrackingServer after the switch to Retain"
        assert obj["metadata"]["annotations"]["mlflow-operator.dev/retention-policy"] == "Retain"

    cluster.kubectl("delete", "trackingserver", name, "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for("garbage collection of the Deployment",
             lambda: get_json(cluster, "deployment", name, "-n", namespace) is None, timeout=60)
    kept = data_objects(cluster, namespace, name)
    assert kept["pvc"] is not None and kept["pvc"]["spec"]["volumeName"] == volume, "the data volume was deleted"
    assert kept["pvc"]["metadata"].get("deletionTimestamp") is None
    assert kept["admin"] is not None and kept["flask"] is not None, "a generated Secret was deleted"

    apply_object(cluster, sqlite_with_basic_auth(namespace, "Retain"))
    wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True", DataRetained="True")
    again = data_objects(cluster, namespace, name)
    assert again["pvc"]["spec"]["volumeName"] == volume
    assert again["admin"]["data"] == before["admin"]["data"], "the admin password changed on re-creation"
    assert again["flask"]["data"] == before["flask"]["data"]
    volumes = get_json(cluster, "deployment", name, "-n", namespace)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": f"{name}-data"}} in volumes


def test_switch_to_delete_makes_the_data_go_with_the_server(cluster, operator, namespace):
    ts = sqlite_with_basic_auth(namespace, "Retain")
    name = ts["metadata"]["name"]
    apply_object(cluster, ts)
    wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True")
    assert not any(owner_refs(obj) for obj in data_objects(cluster, namespace, name).values())

    patch_ts(cluster, namespace, name, {"spec": {"retentionPolicy": "Delete"}})
    live = wait_for_conditions(cluster, namespace, name, timeout=60, op=operator, DataRetained="False")
    assert condition(live, "DataRetained")["reason"] == "DeletedWithServer"
    uid = live["metadata"]["uid"]
    for key, obj in data_objects(cluster, namespace, name).items():
        assert [r["uid"] for r in owner_refs(obj)] == [uid], key

    cluster.kubectl("delete", "trackingserver", name, "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for("the data to be garbage-collected",
             lambda: not any(o and not o["metadata"].get("deletionTimestamp")
                             for o in data_objects(cluster, namespace, name).values()), timeout=60)


# ---- finding 2: Jobs the operator does not own are never deleted ------------------------------------

HOLD_ANNOTATION = "mlflow-operator.dev/test-hold"


def foreign_job(namespace: str, instance: str, name: str, hold: bool) -> dict:
    """A Job of another tool (a Helm release of the same name) with the same instance and component labels."""
    labels = {"app.kubernetes.io/instance": instance, "app.kubernetes.io/component": "migration",
              "app.kubernetes.io/managed-by": "Helm"}
    template_meta: dict = {"labels": labels}
    if hold:
        template_meta["annotations"] = {HOLD_ANNOTATION: "true"}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"backoffLimit": 0, "template": {"metadata": template_meta, "spec": {
            "restartPolicy": "Never", "containers": [{"name": "migrate", "image": "example.invalid/helm-migrate:1"}]}}},
    }


def job_finished(job: dict | None) -> bool:
    return any(c["type"] == "Complete" and c["status"] == "True" for c in ((job or {}).get("status") or {}).get("conditions") or [])


def test_jobs_the_operator_does_not_own_are_never_deleted(cluster, operator, namespace, database_listener):
    ts = load_example("04-remote-direct.yaml", namespace)
    name = ts["metadata"]["name"]
    apply_object(cluster, foreign_job(namespace, name, "helm-migrate-running", hold=True))
    apply_object(cluster, foreign_job(namespace, name, "helm-migrate-done", hold=False))
    wait_for("the foreign Job to complete", lambda: job_finished(get_json(cluster, "job", "helm-migrate-done", "-n", namespace)))

    create_referenced_secrets(cluster, ts, database_listener)
    apply_object(cluster, ts)
    wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True", MigrationsApplied="True")
    # A second migration: its success cleans up the earlier migration records, only the operator's own.
    patch_ts(cluster, namespace, name, {"spec": {"image": "ghcr.io/mlflow-operator/mlflow-server:9.9.9"}})
    live = wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True", MigrationsApplied="True")
    assert live["status"]["mlflowVersion"] == "9.9.9"

    for job in ("helm-migrate-running", "helm-migrate-done"):
        assert get_json(cluster, "job", job, "-n", namespace) is not None, f"the operator deleted Job {job} it does not own"
    ours = [j for j in get_json(cluster, "jobs", "-n", namespace, "-l", "app.kubernetes.io/managed-by=mlflow-operator")["items"]]
    assert [j["spec"]["template"]["spec"]["containers"][0]["image"] for j in ours] == ["ghcr.io/mlflow-operator/mlflow-server:9.9.9"]


# ---- finding 3: the whole desired state waits for the migration; rollbacks are refused ---------------

def held_migration_jobs(cluster, namespace: str, name: str) -> list[dict]:
    jobs = get_json(cluster, "jobs", "-n", namespace, "-l",
                    f"app.kubernetes.io/instance={name},app.kubernetes.io/managed-by=mlflow-operator")["items"]
    return [j for j in jobs if not job_finished(j) and not any(
        c["type"] == "Failed" and c["status"] == "True" for c in (j.get("status") or {}).get("conditions") or [])]


def release_held_jobs(cluster, namespace: str, job: str) -> None:
    for pod in get_json(cluster, "pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job}")["items"]:
        cluster.kubectl("annotate", "pod", pod["metadata"]["name"], "-n", namespace, f"{HOLD_ANNOTATION}=false", "--overwrite")


def test_a_migration_holds_every_child_and_guards_the_old_pods(cluster, operator, namespace, database_listener):
    ts = load_example("07-split.yaml", namespace)
    point_s3_endpoint_at(ts, database_listener)
    create_referenced_secrets(cluster, ts, database_listener)
    apply_object(cluster, ts)
    name = ts["metadata"]["name"]
    wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True", MigrationsApplied="True")
    artifacts = f"{name}-artifacts"
    assert get_json(cluster, "deployment", artifacts, "-n", namespace) is not None
    ingress_before = get_json(cluster, "ingress", name, "-n", namespace)
    old_image = get_json(cluster, "deployment", name, "-n", namespace)["spec"]["template"]["spec"]["containers"][0]["image"]

    # One edit: a new image (its migration held running) and the artifact mode back to Proxied.
    patch_ts(cluster, namespace, name, {"spec": {"image": "ghcr.io/mlflow-operator/mlflow-server:9.9.9",
                                                  "artifacts": {"mode": "Proxied", "replicas": None, "resources": None},
                                                  "podTemplate": {"annotations": {HOLD_ANNOTATION: "true"}}}})
    job = wait_for("the held migration Job", lambda: (held_migration_jobs(cluster, namespace, name) or [None])[0], timeout=60)
    wait_for_conditions(cluster, namespace, name, timeout=60, op=operator, MigrationsApplied="False")
    guard = wait_for("the migration guard budget", lambda: get_json(cluster, "pdb", f"{name}-migration-guard", "-n", namespace))
    assert guard["spec"]["maxUnavailable"] == 0
    # Several passes while the migration runs: nothing of the new spec may reach the serving children.
    time.sleep(8)
    assert get_json(cluster, "deployment", artifacts, "-n", namespace) is not None, \
        "the artifacts Deployment the old pods use was pruned during the migration"
    assert get_json(cluster, "service", artifacts, "-n", namespace) is not None
    assert get_json(cluster, "ingress", name, "-n", namespace)["spec"] == ingress_before["spec"], \
        "the Ingress changed before the new pods exist"
    assert get_json(cluster, "deployment", name, "-n", namespace)["spec"]["template"]["spec"]["containers"][0]["image"] == old_image

    release_held_jobs(cluster, namespace, job["metadata"]["name"])
    wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True", MigrationsApplied="True")
    wait_for("the artifacts Deployment to be pruned", lambda: get_json(cluster, "deployment", artifacts, "-n", namespace) is None)
    wait_for("the guard to go", lambda: get_json(cluster, "pdb", f"{name}-migration-guard", "-n", namespace) is None)
    assert get_json(cluster, "ingress", name, "-n", namespace)["spec"] != ingress_before["spec"]


def test_an_image_rollback_below_the_migrated_schema_is_refused(cluster, operator, namespace, database_listener):
    ts = load_example("04-remote-direct.yaml", namespace)
    create_referenced_secrets(cluster, ts, database_listener)
    apply_object(cluster, ts)
    name = ts["metadata"]["name"]
    live = wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True", MigrationsApplied="True")
    old_image = get_json(cluster, "deployment", name, "-n", namespace)["spec"]["template"]["spec"]["containers"][0]["image"]
    patch_ts(cluster, namespace, name, {"spec": {"image": "ghcr.io/mlflow-operator/mlflow-server:9.9.9"}})
    wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True", MigrationsApplied="True")
    jobs_before = {j["metadata"]["name"] for j in get_json(cluster, "jobs", "-n", namespace)["items"]}

    patch_ts(cluster, namespace, name, {"spec": {"image": old_image}})
    live = wait_for_conditions(cluster, namespace, name, timeout=60, op=operator, MigrationsApplied="False", Degraded="True")
    cond = condition(live, "MigrationsApplied")
    assert cond["reason"] == "RollbackRefused", cond
    assert "cannot downgrade" in cond["message"] and "restore" in cond["message"], cond
    assert condition(live, "Ready")["reason"] == "RollbackRefused"
    image = get_json(cluster, "deployment", name, "-n", namespace)["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(":9.9.9"), "the Deployment rolled back onto a schema its MLflow refuses"
    assert {j["metadata"]["name"] for j in get_json(cluster, "jobs", "-n", namespace)["items"]} == jobs_before
    assert get_json(cluster, "pdb", f"{name}-migration-guard", "-n", namespace) is None
    events = get_json(cluster, "events", "-n", namespace, "--field-selector", f"involvedObject.name={name},type=Warning")["items"]
    assert any(e["reason"] == "RollbackRefused" for e in events), [e["reason"] for e in events]

    # Forward again: the refusal clears without any clean-up.
    patch_ts(cluster, namespace, name, {"spec": {"image": "ghcr.io/mlflow-operator/mlflow-server:9.9.9"}})
    wait_for_conditions(cluster, namespace, name, timeout=60, op=operator, Ready="True", MigrationsApplied="True")


# ---- finding 9: spec changes that cannot be honoured, or that move data, are said -------------------

def warning_events(cluster, namespace: str, name: str) -> list[dict]:
    return get_json(cluster, "events", "-n", namespace, "--field-selector",
                    f"involvedObject.name={name},involvedObject.kind=TrackingServer,type=Warning")["items"]


def test_a_storage_class_change_is_reported_not_silently_ignored(cluster, operator, namespace):
    ts = load_example("02-sqlite.yaml", namespace)
    apply_object(cluster, ts)
    name = ts["metadata"]["name"]
    live = wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True", DataInPlace="True")
    patch_ts(cluster, namespace, name, {"spec": {"storage": {"storageClassName": "fast-ssd"}}})
    live = wait_for_conditions(cluster, namespace, name, timeout=60, op=operator, DataInPlace="False")
    cond = condition(live, "DataInPlace")
    assert cond["reason"] == "VolumeSpecNotApplied" and "fast-ssd" in cond["message"] and "cannot change" in cond["message"], cond
    assert condition(live, "Ready")["status"] == "True", "an ignored class change must not take the server down"
    assert any(e["reason"] == "VolumeSpecNotApplied" for e in warning_events(cluster, namespace, name))
    patch_ts(cluster, namespace, name, [{"op": "remove", "path": "/spec/storage/storageClassName"}], type_="json")
    wait_for_conditions(cluster, namespace, name, timeout=60, op=operator, DataInPlace="True")


def test_moving_to_other_stores_warns_and_stale_conditions_go(cluster, operator, namespace, database_listener):
    ts = load_example("02-sqlite.yaml", namespace)
    apply_object(cluster, ts)
    name = ts["metadata"]["name"]
    wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True")
    wait_for("the claim to be bound", lambda: get_json(cluster, "pvc", f"{name}-data", "-n", namespace)["status"].get("phase") == "Bound")
    patch_ts(cluster, namespace, name, {"spec": {"storage": {"size": "500Gi"}}})
    wait_for_conditions(cluster, namespace, name, timeout=60, op=operator, VolumeResized="False")

    # SQLite on the volume -> an external database and S3: no volume any more.
    put = {"moved-db": {"uri": f"postgresql://mlflow:pw@127.0.0.1:{database_listener}/mlflow"},
           "moved-s3": {"access-key-id": "id", "secret-access-key": "key"}}
    for secret, data in put.items():
        cluster.kubectl("create", "secret", "generic", secret, "-n", namespace, *[f"--from-literal={k}={v}" for k, v in data.items()])
    patch_ts(cluster, namespace, name, {"spec": {
        "storage": None,
        "backendStore": {"type": "Database", "uri": {"secretKeyRef": {"name": "moved-db", "key": "uri"}}},
        "artifacts": {"destination": "s3://team-bucket/mlflow", "s3": {
            "endpointUrl": f"http://127.0.0.1:{database_listener}", "region": "us-east-1",
            "accessKeyId": {"secretKeyRef": {"name": "moved-s3", "key": "access-key-id"}},
            "secretAccessKey": {"secretKeyRef": {"name": "moved-s3", "key": "secret-access-key"}}}}}})
    live = wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True", DataInPlace="False")
    cond = condition(live, "DataInPlace")
    assert cond["reason"] == "BackendStoreChanged", cond
    assert "SQLite on PersistentVolumeClaim" in cond["message"] and "copies no data" in cond["message"], cond
    assert "s3://team-bucket/mlflow" in cond["message"] and "mlflow-artifacts:/" in cond["message"], cond
    reasons = [e["reason"] for e in warning_events(cluster, namespace, name)]
    assert "BackendStoreChanged" in reasons, reasons
    assert condition(live, "VolumeResized") == {}, "a condition the spec can no longer produce stayed in status"
    # It stays said after the rollout, for this generation.
    time.sleep(6)
    live = wait_for_conditions(cluster, namespace, name, timeout=30, op=operator, Ready="True", DataInPlace="False")


# ---- finding 8: what status and events reveal ------------------------------------------------------

NOT_READY_ANNOTATION = "mlflow-operator.dev/test-not-ready"


def test_crashed_containers_logs_never_reach_status(cluster, operator, namespace):
    ts = load_example("02-sqlite.yaml", namespace)
    ts["spec"]["podTemplate"] = {"annotations": {NOT_READY_ANNOTATION: "true"}}
    apply_object(cluster, ts)
    name = ts["metadata"]["name"]
    selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=tracking"
    pod = wait_for("a tracking pod", lambda: (get_json(cluster, "pods", "-n", namespace, "-l", selector)["items"] or [None])[0], timeout=60)
    wait_for("the pod to run", lambda: get_json(cluster, "pod", pod["metadata"]["name"], "-n", namespace)["status"].get("phase") == "Running")
    # What a kubelet reports for a crash-looping server whose log ends in MLflow's traceback.
    log_tail = ("Traceback (most recent call last):\n  File \"/opt/mlflow/sqlalchemy/engine/base.py\", line 3\n"
                "sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection to "
                "postgresql://mlflow:Sup3rSecretPw@db.team.svc:5432/mlflow failed\n"
                "[SQL: SELECT experiments.name FROM experiments WHERE name = 'fraud-model-secret']\n"
                "mlflow-entrypoint serve: unexpected OperationalError: connection to postgresql://mlflow:***@db.team.svc:5432/mlflow failed\n")
    status = {"status": {"containerStatuses": [{
        "name": "mlflow", "image": "x", "imageID": "", "ready": False, "restartCount": 4, "started": False,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s restarting failed container"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": log_tail,
                                     "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:05Z"}}}]}}
    cluster.kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status", "--type=strategic",
                    "-p", json.dumps(status))
    live = wait_for("Available to name the crash", lambda: (lambda ts_: ts_ if condition(ts_, "Available").get("reason") == "CrashLoopBackOff" else None)(
        get_json(cluster, "trackingserver", name, "-n", namespace)), timeout=60)
    text = json.dumps(live["status"]) + json.dumps([e["message"] for e in get_json(
        cluster, "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]])
    for leaked in ("Sup3rSecretPw", "Traceback", "fraud-model-secret", "SELECT"):
        assert leaked not in text, f"{leaked!r} reached status or events: {condition(live, 'Available')}"
    assert "mlflow-entrypoint serve: unexpected OperationalError" in condition(live, "Available")["message"]


def test_each_warning_is_posted_once(cluster, operator, namespace):
    ts = load_example("04-remote-direct.yaml", namespace)  # its Secrets do not exist: SecretNotFound
    apply_object(cluster, ts)
    name = ts["metadata"]["name"]
    wait_for_conditions(cluster, namespace, name, op=operator, Reconciled="False")
    wait_for("the Warning event", lambda: any(e["reason"] == "SecretNotFound" for e in warning_events(cluster, namespace, name)))
    time.sleep(3)  # Kopf posts its log events asynchronously
    events = warning_events(cluster, namespace, name)
    # The Reconciled warning ("Secret forecast-db not found; ..."), as posted by the operator or by Kopf's log poster.
    about = [e for e in events if "Secret forecast-db not found" in e["message"]]
    assert len(about) == 1 and sum(e.get("count", 1) for e in about) == 1, \
        [(e["reason"], e["message"], e.get("count")) for e in about]


def test_a_deleted_servers_metrics_series_go(cluster, operator, namespace):
    import urllib.request

    ts = load_example("02-sqlite.yaml", namespace)
    apply_object(cluster, ts)
    name = ts["metadata"]["name"]
    wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True")
    labels = (f'namespace="{namespace}"', f'name="{name}"')

    def series() -> list[str]:
        text = urllib.request.urlopen(operator.metrics_url, timeout=5).read().decode()
        return [line for line in text.splitlines() if all(label in line for label in labels) and not line.startswith("#")]

    # Status is written just before the gauge is set.
    wait_for("the ready series", lambda: any(line.startswith("mlflow_operator_trackingserver_ready") for line in series()))
    cluster.kubectl("delete", "trackingserver", name, "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for("the series of the deleted TrackingServer to go", lambda: not series(), timeout=30,
             explain=lambda: "\n".join(series()))


# ---- finding 13: handing replicas over to an HPA keeps the current count ----------------------------

def test_hpa_hand_over_keeps_the_replica_count(cluster, operator, namespace, database_listener):
    ts = load_example("04-remote-direct.yaml", namespace)
    ts["spec"]["replicas"] = 3
    ts["spec"].pop("autoscaling", None)
    create_referenced_secrets(cluster, ts, database_listener)
    apply_object(cluster, ts)
    name = ts["metadata"]["name"]
    wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True")
    assert get_json(cluster, "deployment", name, "-n", namespace)["spec"]["replicas"] == 3

    patch_ts(cluster, namespace, name, {"spec": {"replicas": None, "autoscaling": {"minReplicas": 2, "maxReplicas": 6}}})
    seen = []

    def settled() -> bool:
        seen.append(get_json(cluster, "deployment", name, "-n", namespace)["spec"].get("replicas"))
        live = get_json(cluster, "trackingserver", name, "-n", namespace)
        return bool(get_json(cluster, "hpa", name, "-n", namespace)) and live["status"].get("observedGeneration") == live["metadata"]["generation"]

    wait_for("the HPA and a pass on the new generation", settled, timeout=60, interval=0.2)
    deadline = time.monotonic() + 8  # a few more passes (resync is 5 s in the tests)
    while time.monotonic() < deadline:
        seen.append(get_json(cluster, "deployment", name, "-n", namespace)["spec"].get("replicas"))
        time.sleep(0.3)
    assert min(seen) == 3, f"the Deployment's replicas dipped during the hand-over: {seen}"


# ---- finding 4: the operator never connects to a team's stores; the pods' check says ---------------

def test_a_short_service_name_never_makes_the_operator_resolve_it(cluster, operator, namespace):
    """"db" is a Service in the team's namespace: the pods resolve it there. The operator, which runs
    elsewhere (here: outside the cluster, where no .svc name resolves), needs no host at all."""
    ts = load_example("04-remote-direct.yaml", namespace)
    name = ts["metadata"]["name"]
    cluster.kubectl("create", "secret", "generic", "forecast-db", "-n", namespace,
                    "--from-literal=uri=postgresql://mlflow:pw-short@db:5432/mlflow")
    cluster.kubectl("create", "secret", "generic", "forecast-s3", "-n", namespace,
                    "--from-literal=access-key-id=id", "--from-literal=secret-access-key=key")
    apply_object(cluster, ts)
    live = wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True", BackendReachable="True")
    cond = condition(live, "BackendReachable")
    assert cond["reason"] == "Reachable" and "checked from the pods" in cond["message"], cond
    assert "pw-short" not in json.dumps(live["status"])


@pytest.mark.parametrize("scheme", ["mysql", "postgresql"])
def test_the_operator_opens_no_connection_to_a_database(cluster, operator, namespace, scheme):
    """MariaDB blocks a host after max_connect_errors (100) connections that end before the
    handshake, and a NetworkPolicy may admit only the team's pods: the operator connects to no
    database (nor object store) in any pass; the pods' check connects, with a handshake."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(time.monotonic())
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        ts = load_example("04-remote-direct.yaml", namespace)
        name = ts["metadata"]["name"]
        port = server.getsockname()[1]
        ts["spec"]["artifacts"]["s3"]["endpointUrl"] = f"http://127.0.0.1:{port}"
        cluster.kubectl("create", "secret", "generic", "forecast-db", "-n", namespace,
                        f"--from-literal=uri={scheme}://mlflow:pw@127.0.0.1:{port}/mlflow")
        cluster.kubectl("create", "secret", "generic", "forecast-s3", "-n", namespace,
                        "--from-literal=access-key-id=id", "--from-literal=secret-access-key=key")
        apply_object(cluster, ts)
        live = wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True")
        time.sleep(12)  # more passes (resync is 5 s in the tests)
        assert accepted == [], f"the operator opened {len(accepted)} connection(s) to the {scheme} port"
        assert condition(live, "BackendReachable")["reason"] == "Reachable"
    finally:
        stop.set()
        thread.join()
        server.close()
