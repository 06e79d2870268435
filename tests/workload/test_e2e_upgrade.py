"""Upgrade end to end: a TrackingServer on the previous MLflow release (04-remote-direct.yaml, PostgreSQL +
S3, two replicas) is bumped to the pinned release. The migration Job really migrates PostgreSQL (the
alembic revision moves to the new image's head) before any pod of the new version is created, and every
run, param, metric (with its history) and artifact logged before the upgrade is still there after it.
Both releases run from their own server virtualenv (the image built for each MLflow version).
"""
from __future__ import annotations

import json
from datetime import datetime

import pytest
import requests

from tests.operator_fixtures import get_json, wait_for

from .conftest import IMAGE_REPOSITORY, PREVIOUS_MLFLOW, last_json, pinned_mlflow, tutorial_env
from .podrunner import loopback_of
from .server_env import TUTORIAL

pytestmark = pytest.mark.timeout(1800)

HISTORY = r"""
import json, os
import mlflow

mlflow.set_experiment("history")
with mlflow.start_run() as run:
    for step in range(100):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    mlflow.set_tag("logged-by", os.environ["VERSION_TAG"])
print(json.dumps({"run_id": run.info.run_id}))
"""

AFTER = r"""
import json, os
import numpy as np
import mlflow
from mlflow import MlflowClient
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

client = MlflowClient()
tutorial = mlflow.get_run(os.environ["TUTORIAL_RUN"])
history = client.get_metric_history(os.environ["HISTORY_RUN"], "loss")
db = load_diabetes()
_, X_test, _, _ = train_test_split(db.data, db.target, random_state=0)
model = mlflow.sklearn.load_model(mlflow.artifacts.download_artifacts(f"runs:/{tutorial.info.run_id}/model"))
notes = open(mlflow.artifacts.download_artifacts(f"runs:/{tutorial.info.run_id}/notes/notes.txt")).read()
print(json.dumps({
    "params": tutorial.data.params, "metrics": tutorial.data.metrics,
    "history": sorted((m.step, m.value) for m in history),
    "prediction_mean": float(np.mean(model.predict(X_test))), "notes": notes,
    "history_tag": mlflow.get_run(os.environ["HISTORY_RUN"]).data.tags.get("logged-by"),
}))
"""


def revision(e2e, dbname: str) -> str:
    return e2e.postgres.query(dbname, "SELECT version_num FROM alembic_version")[0][0]


def stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def server_version(pod: dict) -> str:
    ip = pod["status"]["podIP"]
    return requests.get(f"http://{loopback_of(ip)}:5000/version", headers={"Host": f"{ip}:5000"}, timeout=30).text


def test_upgrade_migrates_postgres_before_new_pods_and_keeps_every_run(e2e, previous_server_venv, server_venv):
    old_image, new_image = f"{IMAGE_REPOSITORY}:{PREVIOUS_MLFLOW}", f"{IMAGE_REPOSITORY}:{pinned_mlflow()}"
    e2e.runner.images.add(old_image, previous_server_venv.path)
    ts = e2e.example("04-remote-direct.yaml")
    ts["spec"]["image"] = old_image  # start on the previous release
    ts["spec"]["artifacts"]["s3"]["endpointUrl"] = e2e.s3.endpoint
    ts["spec"]["artifacts"]["s3"]["region"] = e2e.s3.region
    e2e.bucket("acme-ml-artifacts")
    uri = e2e.database("upgrade")
    dbname = uri.rsplit("/", 1)[1]
    e2e.secret("forecast-db", {"uri": uri})
    e2e.s3_secret("forecast-s3")
    e2e.apply(ts)
    live = e2e.timed("ready (old)", lambda: e2e.wait_ready("forecast", MigrationsApplied="True"))
    assert live["status"]["mlflowVersion"] == PREVIOUS_MLFLOW, live["status"]
    old_pods = e2e.wait_pods("forecast", 2)
    assert {server_version(p) for p in old_pods} == {PREVIOUS_MLFLOW}
    old_revision = revision(e2e, dbname)

    url = live["status"]["url"]
    before = e2e.timed("tutorial", lambda: last_json(e2e.client(TUTORIAL, tutorial_env(url, **e2e.s3.env())).stdout))
    hist = last_json(e2e.client(HISTORY, {"MLFLOW_TRACKING_URI": url, "VERSION_TAG": PREVIOUS_MLFLOW}).stdout)

    # the upgrade: only the image changes
    e2e.patch("forecast", {"spec": {"image": new_image}})

    def upgraded():
        obj = e2e.get("forecast")
        status = obj.get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions") or []}
        done = (status.get("observedGeneration") == obj["metadata"]["generation"]
                and status.get("mlflowVersion") == pinned_mlflow() and conds.get("Ready", {}).get("status") == "True")
        return obj if done else None

    e2e.timed("upgrade", lambda: wait_for("the TrackingServer to serve the new version", upgraded, timeout=900,
                                          interval=2, explain=e2e.explain))
    new_revision = revision(e2e, dbname)
    assert new_revision != old_revision, f"the schema did not move from {old_revision}"

    # the Job for the new image migrated the database, and finished before any new-version pod existed
    jobs = get_json(e2e.cluster, "jobs", "-n", e2e.namespace, "-l", "app.kubernetes.io/component=migration")["items"]
    job = next(j for j in jobs if j["spec"]["template"]["spec"]["containers"][0]["image"] == new_image)
    assert job["status"].get("succeeded") == 1, job["status"]
    job_log = e2e.runner.logs(e2e.namespace, job["metadata"]["name"], container="migrate", lines=200)
    assert f"revision before {old_revision}, after {new_revision} (migrated)" in job_log, job_log
    finished = stamp(job["status"]["completionTime"])
    new_pods = e2e.wait_pods("forecast", 2)
    assert all(p["spec"]["containers"][0]["image"] == new_image for p in new_pods)
    for pod in new_pods:
        assert stamp(pod["metadata"]["creationTimestamp"]) >= finished, (
            f"pod {pod['metadata']['name']} was created before the migration Job completed ({finished})")
        assert server_version(pod) == pinned_mlflow()
    assert not {p["metadata"]["uid"] for p in old_pods} & {p["metadata"]["uid"] for p in new_pods}

    # everything logged before the upgrade is still there
    after = last_json(e2e.client(AFTER, {"MLFLOW_TRACKING_URI": url, "TUTORIAL_RUN": before["run_id"],
                                         "HISTORY_RUN": hist["run_id"], **e2e.s3.env()}).stdout)
    assert after["params"]["tutorial"] == "remote-tracking" and after["params"]["n_estimators"] == "20", after["params"]
    assert abs(after["prediction_mean"] - after["metrics"]["mean_prediction"]) < 1e-9
    assert after["notes"] == "hello from the tutorial\n"
    assert after["history"] == [[step, 1.0 / (step + 1)] for step in range(100)]
    assert after["history_tag"] == PREVIOUS_MLFLOW
    # and the new version takes new runs
    last_json(e2e.client(HISTORY, {"MLFLOW_TRACKING_URI": url, "VERSION_TAG": pinned_mlflow()}).stdout)
    print(json.dumps({"revision_before": old_revision, "revision_after": new_revision, "timings": e2e.timings}))
