"""Environments (the operator's env contract) for each MLflow scenario, and the tutorial client script."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
import uuid
from pathlib import Path

O = "MLFLOW_OPERATOR_"

ADMIN = "admin"
ADMIN_PASSWORD = "admin-" + secrets.token_urlsafe(12)  # 12+ characters, as MLflow requires
SECRET_KEY = "flask-" + secrets.token_urlsafe(24)


def proxied(backend_uri: str, destination: str, **extra) -> dict:
    """Scenario 5 (and 3 with a local destination): the server proxies artifacts."""
    env = {O + "BACKEND_STORE_URI": backend_uri, O + "SERVE_ARTIFACTS": "true", O + "ARTIFACTS_DESTINATION": destination}
    env.update(extra)
    return env


def direct(backend_uri: str, root: str, **extra) -> dict:
    """Scenario 4: clients write to the store themselves; the server holds no storage credentials."""
    env = {O + "BACKEND_STORE_URI": backend_uri, O + "SERVE_ARTIFACTS": "false", O + "DEFAULT_ARTIFACT_ROOT": root}
    env.update(extra)
    return env


def artifacts_only(destination: str, **extra) -> dict:
    """Scenario 6: an artifacts-only server."""
    env = {O + "ROLE": "artifacts", O + "ARTIFACTS_DESTINATION": destination}
    env.update(extra)
    return env


def basic_auth(auth_db_uri: str, secret_key: str = SECRET_KEY) -> dict:
    return {
        O + "AUTH": "basic",
        O + "AUTH_DATABASE_URI": auth_db_uri,
        O + "ADMIN_USERNAME": ADMIN,
        O + "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key,
    }


# The seed tutorial (remote experiment tracking with PostgreSQL and S3): autolog a RandomForestRegressor
# on the diabetes data set (autolog logs the model), plus an explicit param, metric and artifact; download the model
# through the tracking server and check that it predicts the same values.
TUTORIAL = (Path(__file__).resolve().parents[2] / "examples" / "tutorial.py").read_text()


def last_json(stdout: str) -> dict:
    import json

    return json.loads(stdout.strip().splitlines()[-1])


# What the tests write for people to look at (screenshots, timings).
ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "test-artifacts" / "workload"


# ---- PostgreSQL that can go down and come back ---------------------------------------------------------

class StoppablePostgres:
    """Stops a running testservices Postgres (fast shutdown: clients disconnected, data kept) and starts it
    again with exactly the command line it had (read from /proc), on the same port and data directory."""

    def __init__(self, pg):
        self.pg = pg
        self.argv = Path(f"/proc/{pg.proc.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")

    def stop(self) -> None:
        os.killpg(self.pg.proc.pid, signal.SIGINT)
        self.pg.proc.wait(60)

    def start(self) -> None:
        from testservices._util import wait_port
        from testservices.postgres import _demote

        log = open(self.pg.log, "ab")
        self.pg.proc = subprocess.Popen([a.decode() for a in self.argv], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, **_demote())
        log.close()
        wait_port(self.pg.port, 60, self.pg.proc, "postgres (restarted)", self.pg.log)
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg2.connect(**self.pg.connect_kwargs("postgres"), connect_timeout=3).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)



# A run logged earlier is still whole: params, metrics, the model (downloaded through the server) and
# its predictions (their mean was logged as a metric by the tutorial).
RECHECK = r"""
import json, os
import numpy as np
import mlflow
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

run_id = os.environ["RUN_ID"]
run = mlflow.get_run(run_id)
assert run.data.params["tutorial"] == "remote-tracking", run.data.params
db = load_diabetes()
_, X_test, _, _ = train_test_split(db.data, db.target, random_state=0)
model = mlflow.sklearn.load_model(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model"))
assert abs(float(np.mean(model.predict(X_test))) - run.data.metrics["mean_prediction"]) < 1e-9
notes = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/notes/notes.txt")
assert open(notes).read() == "hello from the tutorial\n"
print(json.dumps({"run_id": run_id, "metrics": sorted(run.data.metrics)}))
"""


def tutorial_env(url: str, experiment: str | None = None, **extra: str) -> dict[str, str]:
    env = {"MLFLOW_TRACKING_URI": url, "EXPERIMENT": experiment or "tutorial-" + uuid.uuid4().hex[:6]}
    env.update(extra)
    return env
