"""The database goes away and comes back (04-remote-direct.yaml on a PostgreSQL of its own): the operator
reports BackendReachable=False naming the database host (never the password) and Ready=False; when the
database is back, status recovers and nothing logged before is lost.
"""
from __future__ import annotations

import json

import pytest

from testservices.postgres import Postgres

from .conftest import RECHECK, StoppablePostgres, condition, last_json, tutorial_env
from .server_env import TUTORIAL

pytestmark = pytest.mark.timeout(1500)

GET_RUN = r"""
import os
import mlflow
print(mlflow.get_run(os.environ["RUN_ID"]).info.status)
"""


@pytest.fixture
def own_postgres():
    pg = Postgres().start()  # this test stops its database: not the session's shared one
    yield pg
    pg.stop()


def test_backend_down_is_reported_and_recovers_without_data_loss(e2e, own_postgres):
    pg = StoppablePostgres(own_postgres)
    ts = e2e.example("04-remote-direct.yaml")
    ts["spec"]["artifacts"]["s3"]["endpointUrl"] = e2e.s3.endpoint
    ts["spec"]["artifacts"]["s3"]["region"] = e2e.s3.region
    e2e.bucket("acme-ml-artifacts")
    e2e.secret("forecast-db", {"uri": own_postgres.create_database("forecast")})
    e2e.s3_secret("forecast-s3")
    e2e.apply(ts)
    live = e2e.timed("ready", lambda: e2e.wait_ready("forecast", BackendReachable="True"))
    url = live["status"]["url"]
    out = e2e.timed("tutorial", lambda: last_json(e2e.client(TUTORIAL, tutorial_env(url, **e2e.s3.env())).stdout))

    pg.stop()
    down = e2e.timed("noticed down", lambda: e2e.wait_conditions("forecast", timeout=120, BackendReachable="False",
                                                                   Ready="False"))
    cond = condition(down, "BackendReachable")
    assert f"127.0.0.1:{own_postgres.port}" in cond["message"], cond
    assert own_postgres.password not in json.dumps(down["status"]), "the database password leaked into status"
    # One bounded attempt: a worker that has not reached the database yet retries its engine for ~100 s
    # (MLflow's own backoff) and the client's default retries multiply that past any sane timeout.
    no_retries = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "150"}
    failed = e2e.client(GET_RUN, {"MLFLOW_TRACKING_URI": url, "RUN_ID": out["run_id"], **no_retries}, check=False,
                        timeout=300)
    assert failed.returncode != 0, "a read succeeded with the database down"

    pg.start()
    e2e.timed("recovered", lambda: e2e.wait_ready("forecast", timeout=300, BackendReachable="True"))
    again = last_json(e2e.client(RECHECK, {"MLFLOW_TRACKING_URI": url, "RUN_ID": out["run_id"], **e2e.s3.env()}).stdout)
    assert again["run_id"] == out["run_id"]
    last_json(e2e.client(TUTORIAL, tutorial_env(url, **e2e.s3.env())).stdout)  # and it takes new runs


def test_a_server_that_refuses_to_start_says_why_in_status(e2e, own_postgres):
    """A database restored from a backup without its schema version: the new pod's `serve` refuses to
    start, the pod crash-loops, and the TrackingServer's status carries the entrypoint's own reason
    (FallbackToLogsOnError termination message), not just "0/1 pods ready". Fixing the database heals it."""
    from tests.operator_fixtures import wait_for

    ts = e2e.example("04-remote-direct.yaml")
    ts["spec"]["artifacts"]["s3"]["endpointUrl"] = e2e.s3.endpoint
    ts["spec"]["artifacts"]["s3"]["region"] = e2e.s3.region
    ts["spec"]["replicas"] = 1
    e2e.bucket("acme-ml-artifacts")
    e2e.secret("forecast-db", {"uri": own_postgres.create_database("forecast")})
    e2e.s3_secret("forecast-s3")
    e2e.apply(ts)
    e2e.timed("ready", lambda: e2e.wait_ready("forecast"))

    own_postgres.query("forecast", "ALTER TABLE alembic_version RENAME TO alembic_version_saved")
    selector = "app.kubernetes.io/instance=forecast,app.kubernetes.io/component=tracking"
    e2e.kubectl("delete", "pod", "-n", e2e.namespace, "-l", selector, "--wait=false")

    def refusal_in_status():
        live = e2e.get("forecast")
        cond = condition(live, "Available") or {}
        return live if cond.get("status") == "False" and "refusing to start" in cond.get("message", "") else None

    live = e2e.timed("crash reported", lambda: wait_for("the refusal in status.conditions[Available]", refusal_in_status,
                                                          timeout=240, interval=1, explain=e2e.explain))
    available, ready = condition(live, "Available"), condition(live, "Ready")
    assert available["reason"] in ("CrashLoopBackOff", "ContainerFailed"), available
    assert "container mlflow of pod forecast-" in available["message"], available
    assert ready["status"] == "False" and "refusing to start" in ready["message"], ready
    assert own_postgres.password not in json.dumps(live["status"]), "the database password leaked into status"

    own_postgres.query("forecast", "ALTER TABLE alembic_version_saved RENAME TO alembic_version")
    e2e.kubectl("delete", "pod", "-n", e2e.namespace, "-l", selector, "--wait=false")  # skip the back-off
    healed = e2e.timed("healed", lambda: e2e.wait_ready("forecast", timeout=300))
    assert "refusing" not in condition(healed, "Available")["message"]
