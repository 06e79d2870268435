"""The database goes away and comes back, on real pods (04-remote-direct.yaml on a PostgreSQL of the
test's own, reached by the pods as postgres.<namespace>.svc:5432 through reach.py's relay).

- PostgreSQL stopped (fast shutdown, data kept): the server pod's readiness probe (/readyz, a query
  through MLflow's pool) fails, and the operator reports BackendReachable=False with reason
  DatabaseNotAnswering, naming the database's host and port (never the password), and Ready=False;
  a read through the server fails. Restarted on the same port and data: status recovers, the run
  logged before is whole (params, metrics, model and its predictions, notes), new runs are taken.
- A server that refuses to start says why in status: the same database as restored from a backup
  without its schema version (alembic_version renamed), a new pod's `serve` refuses, the pod
  crash-loops, and Available/Ready carry the entrypoint's own sentence (the FallbackToLogsOnError
  termination message), not just "0/1 pods ready". Putting the table back heals it.

One server for both (its migration Job and first start are the expensive part on a loaded node),
with one replica instead of the example's two: nothing asserted here depends on the count.
"""
from __future__ import annotations

import json

import pytest

from testservices.postgres import Postgres
from tests.operator_fixtures import condition, wait_for
from tests.workload.server_env import RECHECK, StoppablePostgres, last_json, tutorial_env
from tests.workload.server_env import TUTORIAL

from .test_examples_on_real_pods import QUICK

pytestmark = [pytest.mark.node, pytest.mark.timeout(1800)]

GET_RUN = r"""
import os
import mlflow
print(mlflow.get_run(os.environ["RUN_ID"]).info.status)
"""
SELECTOR = "app.kubernetes.io/instance=forecast,app.kubernetes.io/component=tracking"


@pytest.fixture
def own_postgres():
    pg = Postgres().start()  # this test stops its database: not the session's shared one
    yield pg
    pg.stop()


def test_backend_down_and_back_and_a_refusal_to_start_on_real_pods(real, own_postgres):
    pg = StoppablePostgres(own_postgres)
    ts = real.example("04-remote-direct.yaml")
    ts["spec"]["replicas"] = 1
    ts["spec"]["artifacts"]["s3"]["endpointUrl"] = real.s3_endpoint()  # MinIO instead of AWS
    ts["spec"]["artifacts"]["s3"]["region"] = real.s3.region
    real.bucket("acme-ml-artifacts")
    uri = real.database("forecast", server=own_postgres)
    dbname = uri.rsplit("/", 1)[1]
    real.secret("forecast-db", {"uri": uri})
    real.s3_secret("forecast-s3")
    real.apply(ts)
    live = real.timed("ready", lambda: real.wait_ready("forecast", MigrationsApplied="True", BackendReachable="True"))
    forward = real.port_forward("forecast")
    out = real.timed("tutorial", lambda: last_json(real.client(TUTORIAL, tutorial_env(forward.url, **real.s3.env())).stdout))

    # ---- down
    pg.stop()
    down = real.timed("noticed down", lambda: real.wait_conditions("forecast", timeout=180, BackendReachable="False",
                                                                     Ready="False"))
    cond = condition(down, "BackendReachable")
    assert cond["reason"] == "DatabaseNotAnswering", cond
    assert f"postgres.{real.namespace}.svc:5432/{dbname}" in cond["message"], cond
    assert own_postgres.password not in json.dumps(down["status"]), "the database password leaked into status"
    # One bounded attempt: a worker that has not reached the database yet retries its engine for ~100 s
    # (MLflow's own backoff) and the client's default retries multiply that past any sane timeout.
    no_retries = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "150"}
    failed = real.client(GET_RUN, {"MLFLOW_TRACKING_URI": forward.url, "RUN_ID": out["run_id"], **no_retries},
                         check=False, timeout=300)
    assert failed.returncode != 0, f"a read succeeded with the database down: {failed.stdout[-500:]}"

    # ---- back
    pg.start()
    back = real.timed("recovered", lambda: real.wait_ready("forecast", timeout=300, BackendReachable="True"))
    assert condition(back, "BackendReachable")["reason"] == "Reachable", condition(back, "BackendReachable")
    forward.stop()
    forward = real.port_forward("forecast")
    again = last_json(real.client(RECHECK, {"MLFLOW_TRACKING_URI": forward.url, "RUN_ID": out["run_id"],
                                            **real.s3.env()}).stdout)
    assert again["run_id"] == out["run_id"]
    new_run = last_json(real.client(QUICK, {"MLFLOW_TRACKING_URI": forward.url, "EXAMPLE": "after-outage",
                                            **real.s3.env()}).stdout)  # and it takes new runs
    assert new_run["downloaded"] == "hello from after-outage\n", new_run
    forward.stop()

    # ---- a server that refuses to start
    own_postgres.query(dbname, "ALTER TABLE alembic_version RENAME TO alembic_version_saved")
    real.kubectl("delete", "pod", "-n", real.namespace, "-l", SELECTOR, "--wait=false")

    def refusal_in_status():
        live = real.get("forecast")
        cond = condition(live, "Available") or {}
        return live if cond.get("status") == "False" and "refusing to start" in cond.get("message", "") else None

    live = real.timed("crash reported", lambda: wait_for("the refusal in status.conditions[Available]",
                                                           refusal_in_status, timeout=300, interval=1,
                                                           explain=real.explain))
    available, ready = condition(live, "Available"), condition(live, "Ready")
    assert available["reason"] in ("CrashLoopBackOff", "ContainerFailed"), available
    assert "container mlflow of pod forecast-" in available["message"], available
    assert ready["status"] == "False" and "refusing to start" in ready["message"], ready
    assert own_postgres.password not in json.dumps(live["status"]), "the database password leaked into status"

    own_postgres.query(dbname, "ALTER TABLE alembic_version_saved RENAME TO alembic_version")
    real.kubectl("delete", "pod", "-n", real.namespace, "-l", SELECTOR, "--wait=false")  # skip the back-off
    healed = real.timed("healed", lambda: real.wait_ready("forecast", timeout=300))
    assert "refusing" not in condition(healed, "Available")["message"]
