"""Store reachability as the pods see it (issue 12, finding 4) and the version that serves (finding 8):
the pods' `check` init container reports, the operator reads its termination message."""
from __future__ import annotations

import json

from mlflow_operator.api import load_trackingserver
from mlflow_operator.constants import CONFIG_HASH_ANNOTATION
from mlflow_operator.controller import stores
from mlflow_operator.controller.observe import pod_problem
from mlflow_operator.controller.podmessages import check_result, parse_check_report
from mlflow_operator.render import render

from .helpers import load_example, make, of_kind, one

REPORT = "mlflow-entrypoint check-report: "


def _message(databases, artifacts=None, version="3.18.0", summary="ok"):
    report = {"version": 1, "mlflowVersion": version, "role": "tracking", "databases": databases, "artifacts": artifacts}
    return f"mlflow-entrypoint check: {summary}\n{REPORT}{json.dumps(report)}"


def _db(reachable=True, reason="Reachable", message="tracking database postgresql db:5432/mlflow answered"):
    return {"kind": "tracking", "target": "postgresql db:5432/mlflow", "reachable": reachable, "reason": reason,
            "message": message, "attempts": 1}


def _pod(name, check=None, last=None, ready=True, hash_="h1", created="2026-01-01T00:00:00Z", running=False):
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}], "initContainerStatuses": []}
    if check is not None or last is not None:
        cs = {"name": "check", "state": {}, "lastState": {}}
        if check is not None:
            cs["state"] = {"terminated": check}
        elif running:
            cs["state"] = {"running": {"startedAt": created}}
        else:
            cs["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
        if last is not None:
            cs["lastState"] = {"terminated": last}
        status["initContainerStatuses"].append(cs)
    return {"metadata": {"name": name, "creationTimestamp": created, "annotations": {CONFIG_HASH_ANNOTATION: hash_}},
            "status": status}


def _deployment(hash_="h1"):
    return {"spec": {"template": {"metadata": {"annotations": {CONFIG_HASH_ANNOTATION: hash_}}}}}


def _ts(example="04-remote-direct.yaml", namespace="team-a"):
    body = load_example(example)
    body["metadata"]["namespace"] = namespace
    return load_trackingserver(body)


def _proxied_s3():
    return load_trackingserver(make({"backendStore": {"type": "Database", "uri": {"secretKeyRef": {"name": "db", "key": "uri"}}},
                                     "artifacts": {"mode": "Proxied", "destination": "s3://bucket/mlflow",
                                                   "s3": {"endpointUrl": "http://minio.storage:9000"}}}))


def test_every_server_pod_checks_its_stores_in_an_init_container_that_reports_through_its_termination_message():
    for example, deployments in (("04-remote-direct.yaml", 1), ("07-split.yaml", 2), ("02-sqlite.yaml", 1)):
        manifests = render(load_example(example))
        assert len(of_kind(manifests, "Deployment")) == deployments
        for deployment in of_kind(manifests, "Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            init = pod["initContainers"]
            assert init[-1]["name"] == "check", [c["name"] for c in init]  # last: after SQLite's migrate
            assert init[-1]["command"][1:] == ["check", "--init", "--termination-message", "/dev/termination-log"]
            assert "wait-for-backend" not in [c["name"] for c in init]
            server = pod["containers"][0]
            # the check sees what the server sees: the same environment and mounts
            names = {e["name"] for e in init[-1]["env"]}
            assert {e["name"] for e in server["env"]} <= names and "MLFLOW_OPERATOR_BACKEND_WAIT_SECONDS" in names
            assert init[-1]["volumeMounts"] == server["volumeMounts"]


def test_the_check_report_is_read_and_only_its_known_fields_reach_status():
    text = _message([_db(reachable=False, reason="HostNotFound",
                         message="tracking database postgresql db:5432/mlflow: could not translate host name "
                                 "postgresql://mlflow:hunter2@db/x")], version="3.18.0")
    report = parse_check_report(text + '\n')
    assert report["mlflowVersion"] == "3.18.0"
    assert report["databases"][0]["reason"] == "HostNotFound"
    assert "hunter2" not in json.dumps(report)
    assert parse_check_report("mlflow-entrypoint check-report: {not json") is None
    assert parse_check_report(_message([], version="<script>" * 20))["mlflowVersion"] is None
    assert parse_check_report(None) is None and parse_check_report("Traceback ...") is None


def test_backend_reachability_comes_from_the_current_pods_check():
    ts = _ts()
    secret = lambda name, key: "postgresql://mlflow:pw@db:5432/mlflow"  # a short Service name: nothing to resolve here
    ok = _pod("a", check={"exitCode": 0, "message": _message([_db()])})
    cond = stores.backend_condition(ts, secret, "forecast", [ok])
    assert (cond.status, cond.reason) == (True, "Reachable") and "db:5432/mlflow answered" in cond.message

    failed = _pod("b", last={"exitCode": 3, "message": _message([_db(False, "HostNotFound", "tracking database "
                                                                   "postgresql db:5432/mlflow: could not translate host name")])},
                  ready=False, created="2026-01-01T00:01:00Z")
    cond = stores.backend_condition(ts, secret, "forecast", [failed, ok])
    assert (cond.status, cond.reason) == (False, "HostNotFound") and cond.message.startswith("pod b: ")

    # kwok's pods (and images without the report) only say that the check passed
    kwok = _pod("k", check={"exitCode": 0, "reason": "Completed"}, created="2026-01-02T00:00:00Z")
    cond = stores.backend_condition(ts, secret, "forecast", [kwok])
    assert (cond.status, cond.reason) == (True, "Reachable") and "pod k passed" in cond.message
    # a pod that says what it checked is quoted before a newer one that does not
    cond = stores.backend_condition(ts, secret, "forecast", [kwok, ok])
    assert "db:5432/mlflow answered" in cond.message

    waiting = _pod("w", ready=False)
    cond = stores.backend_condition(ts, secret, "forecast", [waiting])
    assert cond.status is None and cond.reason == "NotCheckedYet"
    assert stores.backend_condition(ts, secret, "forecast", []).status is None

    crashed = _pod("c", last={"exitCode": 2, "message": "mlflow-entrypoint check: MLFLOW_OPERATOR_PORT='x': expected an integer"})
    cond = stores.backend_condition(ts, secret, "forecast", [crashed])
    assert cond.status is None and cond.reason == "CheckFailed" and "expected an integer" in cond.message

    assert stores.backend_condition(ts, lambda n, k: None, "forecast", [ok]).reason == "SecretNotFound"
    assert stores.backend_condition(ts, lambda n, k: "mssql://x/y", "forecast", [ok]).reason == "UnsupportedDatabase"


def test_the_artifact_store_condition_reads_the_pods_that_hold_its_credentials():
    ts = _proxied_s3()
    db_ok, store_down = _db(), {"target": "s3://bucket/mlflow", "reachable": False, "reason": "BucketNotFound",
                                "message": "artifact store s3://bucket/mlflow: NoSuchBucket"}
    pod = _pod("a", last={"exitCode": 3, "message": _message([db_ok], store_down)}, ready=False)
    cond = stores.artifact_condition(ts, "team", [pod])
    assert (cond.status, cond.reason) == (False, "BucketNotFound")
    # ... while the database, which answered, is reachable
    assert stores.backend_condition(ts, lambda n, k: "postgresql://u:p@db/x", "team", [pod]).status is True
    assert stores.artifact_condition(_ts("04-remote-direct.yaml"), "forecast", []).reason == "ClientsWriteDirectly"
    assert stores.artifact_condition(_ts("03-local-artifacts.yaml"), "x", []).reason == "Volume"


def test_only_the_current_pod_templates_pods_count():
    old, new = _pod("old", hash_="h0"), _pod("new", hash_="h1", created="2026-01-02T00:00:00Z")
    gone = _pod("gone", hash_="h1")
    gone["metadata"]["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    assert [p["metadata"]["name"] for p in stores.current_pods(_deployment("h1"), [old, new, gone])] == ["new"]
    assert stores.current_pods(None, [old]) == []


def test_the_version_is_what_the_ready_pods_report():
    serving = _pod("a", check={"exitCode": 0, "message": _message([_db()], version="3.17.2")})
    starting = _pod("b", check={"exitCode": 0, "message": _message([_db()], version="3.18.0")}, ready=False,
                    created="2026-01-02T00:00:00Z")
    assert stores.reported_version([starting, serving]) == "3.17.2"
    assert stores.reported_version([_pod("k", check={"exitCode": 0})]) is None


def test_a_failed_check_shows_its_summary_in_available_not_its_json():
    message = _message([_db(False, "ConnectionRefused", "tracking database postgresql db:5432/mlflow: connection refused")],
                       summary="ConnectionRefused: tracking database postgresql db:5432/mlflow: connection refused")
    pod = _pod("p", last={"exitCode": 3, "message": message}, ready=False)
    pod["status"]["containerStatuses"] = [{"name": "mlflow", "state": {"waiting": {"reason": "PodInitializing"}}}]
    problem = pod_problem([pod])
    assert problem.reason == "CrashLoopBackOff" and "connection refused" in problem.message
    assert "check-report" not in problem.message and "{" not in problem.message
    assert check_result(pod).passed is False


def test_a_server_that_stays_unready_after_its_start_tells_the_database_does_not_answer():
    import datetime as dt

    ts = _ts()
    secret = lambda name, key: "postgresql://mlflow:s3cr3t@db.team-a.svc:5432/mlflow"
    now = dt.datetime(2026, 1, 1, 0, 10, tzinfo=dt.timezone.utc)

    def serving(name, started_at, ready):
        pod = _pod(name, check={"exitCode": 0, "message": _message([_db()])}, ready=ready)
        pod["status"]["containerStatuses"] = [{"name": "mlflow", "started": True, "ready": ready,
                                               "state": {"running": {"startedAt": started_at}}}]
        return pod

    down = stores.backend_condition(ts, secret, "forecast", [serving("a", "2026-01-01T00:00:00Z", False)], now=now)
    assert (down.status, down.reason) == (False, "DatabaseNotAnswering")
    assert "postgresql db.team-a.svc:5432/mlflow" in down.message and "s3cr3t" not in down.message
    # just started: its first readiness probe has not passed yet; that is no outage
    starting = stores.backend_condition(ts, secret, "forecast", [serving("b", "2026-01-01T00:09:30Z", False)], now=now)
    assert starting.status is True
    assert stores.backend_condition(ts, secret, "forecast", [serving("c", "2026-01-01T00:00:00Z", True)], now=now).status is True
