"""An upgrade between two MLflow releases, on real pods of two server images built here.

04-remote-direct.yaml (PostgreSQL, S3 written by the clients, two replicas) starts on the server
image of the release before the pinned one (`server-previous`, hack/images/previous.py: the same
Dockerfile with that MLflow in its lock), is used, and then only its `spec.image` changes to the
current image. What a user relies on is checked on the cluster, not on the operator's word:

- the migration Job of the new image really migrates PostgreSQL (the alembic revision moves to the
  new image's head; its log says from which revision to which), and no pod of the new image exists
  until that Job has succeeded;
- meanwhile the old version keeps serving, through its Service, with the migration guard keeping
  its pods from eviction;
- nothing logged before is lost: the tutorial's run (params, metrics, the model predicting the
  same values, its notes) and a 100-step metric history, read through the new version, and the new
  version takes new runs.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from images.previous import PREVIOUS_MLFLOW
from mlflow_operator.constants import MLFLOW_VERSION
from tests.operator_fixtures import get_json, wait_for
from tests.workload.server_env import last_json, tutorial_env
from tests.workload.server_env import TUTORIAL

from .conftest import load_test_image

pytestmark = pytest.mark.timeout(1800)

NAME = "forecast"

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

# Run inside a server pod: every replica answers at its pod IP (a Host the entrypoint allows), pod to pod.
PER_POD = r"""
import json, sys, urllib.request
run_id, ips = sys.argv[1], sys.argv[2:]
out = {}
for ip in ips:
    version = urllib.request.urlopen(f"http://{ip}:5000/version", timeout=30).read().decode()
    run = json.load(urllib.request.urlopen(f"http://{ip}:5000/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=30))
    out[ip] = [version, run["run"]["info"]["run_id"]]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def previous_server_image(node_cluster, node_images, request):
    """The server image of MLflow PREVIOUS_MLFLOW, on the node."""
    return load_test_image(node_cluster, request, "server-previous", f"the server image of MLflow {PREVIOUS_MLFLOW}")


def revision(real, dbname: str) -> str:
    return real.postgres.query(dbname, "SELECT version_num FROM alembic_version")[0][0]


def per_pod(real, pods: list[dict], run_id: str) -> dict[str, list[str]]:
    """From the first pod: /version and the run, at each pod's IP."""
    ips = [p["status"]["podIP"] for p in pods]
    return json.loads(real.kubectl("exec", "-n", real.namespace, pods[0]["metadata"]["name"], "-c", "mlflow", "--",
                                   "python3", "-c", PER_POD, run_id, *ips).stdout)


class ServingWatch:
    """While the upgrade runs: what the Service answers (through a `kubectl port-forward` opened
    before it, so to an old pod) and, right after each answer, the pods, Jobs and budgets of the
    server (pods listed before Jobs: a Job still incomplete in a sample was incomplete when its
    pods were listed and when the answer came)."""

    def __init__(self, real, url: str, run_id: str, timeout: float):
        self.real, self.url, self.run_id = real, url, run_id
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + timeout
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> "ServingWatch":
        self._thread.start()
        return self

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join(60)
        return self.samples

    def _answer(self) -> str:
        try:
            version = urllib.request.urlopen(self.url + "/version", timeout=10).read().decode()
            run = json.load(urllib.request.urlopen(f"{self.url}/api/2.0/mlflow/runs/get?run_id={self.run_id}", timeout=10))
            return version if run["run"]["info"]["run_id"] == self.run_id else f"another run: {run}"
        except Exception as exc:  # noqa: BLE001 - recorded; judged against the Job's state below
            return f"error: {exc}"

    def _loop(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            answer = self._answer()
            listed = get_json(self.real.cluster, "pods,jobs,pdb", "-n", self.real.namespace, "-l",
                              f"app.kubernetes.io/instance={NAME}") or {"items": []}
            self.samples.append({"answer": answer, "items": listed["items"]})
            self._stop.wait(0.5)


def _new_job(items: list[dict], image: str) -> dict | None:
    return next((j for j in items if j["kind"] == "Job"
                 and j["spec"]["template"]["spec"]["containers"][0]["image"] == image), None)


def _server_pod_images(items: list[dict]) -> set[str]:
    return {c["image"] for p in items if p["kind"] == "Pod"
            and p["metadata"]["labels"].get("app.kubernetes.io/component") == "tracking"
            for c in p["spec"]["containers"] if c["name"] == "mlflow"}


def test_upgrade_migrates_postgresql_before_new_pods_start_and_keeps_every_run(real, node_images, previous_server_image):
    old_image, new_image = previous_server_image.ref, real.operator.default_image
    assert old_image.endswith(f":{PREVIOUS_MLFLOW}") and new_image.endswith(f":{MLFLOW_VERSION}")
    ts = real.example("04-remote-direct.yaml")
    ts["spec"]["image"] = old_image  # a cluster that ran the previous release
    ts["spec"]["artifacts"]["s3"]["endpointUrl"] = real.s3_endpoint()  # MinIO instead of AWS
    ts["spec"]["artifacts"]["s3"]["region"] = real.s3.region
    bucket = real.bucket("acme-ml-artifacts")
    db_uri = real.database("upgrade")
    dbname = db_uri.rsplit("/", 1)[1]
    real.secret("forecast-db", {"uri": db_uri})
    real.s3_secret("forecast-s3")
    real.apply(ts)
    live = real.timed("ready (old)", lambda: real.wait_ready(NAME, MigrationsApplied="True"))
    assert live["status"]["mlflowVersion"] == PREVIOUS_MLFLOW, live["status"]
    old_pods = real.wait_pods(NAME, 2)
    assert {c["image"] for p in old_pods for c in p["spec"]["containers"]} == {old_image}
    old_revision = revision(real, dbname)

    forward = real.port_forward(NAME)
    before = real.timed("tutorial", lambda: last_json(real.client(TUTORIAL, tutorial_env(forward.url, **real.s3.env())).stdout))
    history = last_json(real.client(HISTORY, {"MLFLOW_TRACKING_URI": forward.url, "VERSION_TAG": PREVIOUS_MLFLOW}).stdout)
    # the model (an MLflow 3 LoggedModel) under the experiment's models/, the run's notes under the run
    keys = real.s3_keys(bucket, f"forecast/{before['experiment_id']}/")
    assert any("/models/" in k and k.endswith("MLmodel") for k in keys), keys
    assert any(k.endswith(f"{before['run_id']}/artifacts/notes/notes.txt") for k in keys), keys
    assert {v for v, _ in per_pod(real, old_pods, before["run_id"]).values()} == {PREVIOUS_MLFLOW}

    # the upgrade: only the image changes
    watch = ServingWatch(real, forward.url, before["run_id"], timeout=900).start()
    real.kubectl("patch", "trackingserver", NAME, "-n", real.namespace, "--type=merge",
                 "-p", json.dumps({"spec": {"image": new_image}}))

    def upgraded():
        obj = get_json(real.cluster, "trackingserver", NAME, "-n", real.namespace) or {}
        status = obj.get("status") or {}
        ready = {c["type"]: c["status"] for c in status.get("conditions") or []}.get("Ready")
        done = (status.get("observedGeneration") == obj["metadata"]["generation"]
                and status.get("mlflowVersion") == MLFLOW_VERSION and ready == "True")
        return obj if done else None

    try:
        real.timed("upgrade", lambda: wait_for("the TrackingServer to serve the new version", upgraded,
                                               timeout=900, interval=2, explain=real.explain))
    finally:
        samples = watch.stop()
    forward.stop()

    # While the new image's Job had not succeeded: the old version answered every request through
    # the Service, no server pod of the new image existed, and the guard kept the old pods.
    migrating = [s for s in samples if (job := _new_job(s["items"], new_image)) is not None
                 and not (job.get("status") or {}).get("succeeded")]
    assert migrating, f"no sample saw the migration Job running ({len(samples)} samples)"
    answers = {s["answer"] for s in migrating}
    assert answers == {PREVIOUS_MLFLOW}, f"while migrating, the Service answered {answers}"
    assert all(_server_pod_images(s["items"]) == {old_image} for s in migrating), \
        [sorted(_server_pod_images(s["items"])) for s in migrating]
    assert any(i["kind"] == "PodDisruptionBudget" and i["metadata"]["name"] == f"{NAME}-migration-guard"
               for s in migrating for i in s["items"]), "no migration guard while the Job ran"
    assert not get_json(real.cluster, "pdb", f"{NAME}-migration-guard", "-n", real.namespace), "the guard stayed"

    # the Job of the new image migrated the database, and finished before any new pod was created
    new_revision = revision(real, dbname)
    assert new_revision != old_revision, f"the schema did not move from {old_revision}"
    jobs = get_json(real.cluster, "jobs", "-n", real.namespace, "-l", "app.kubernetes.io/component=migration")["items"]
    job = _new_job(jobs, new_image)
    assert job and job["status"].get("succeeded") == 1, jobs
    [job_pod] = real.pods(f"job-name={job['metadata']['name']}")
    job_log = real.kubectl("logs", "-n", real.namespace, job_pod["metadata"]["name"], "-c", "migrate").stdout
    assert f"revision before {old_revision}, after {new_revision} (migrated)" in job_log, job_log
    # Kubernetes' timestamps are RFC 3339 UTC to the second: their string order is time order.
    finished = job["status"]["completionTime"]
    new_pods = real.wait_pods(NAME, 2)
    assert {c["image"] for p in new_pods for c in p["spec"]["containers"]} == {new_image}
    for pod in new_pods:
        assert pod["metadata"]["creationTimestamp"] >= finished, (pod["metadata"]["name"], finished)
    assert not {p["metadata"]["uid"] for p in old_pods} & {p["metadata"]["uid"] for p in new_pods}
    served = per_pod(real, new_pods, before["run_id"])
    assert len(served) == 2 and {tuple(v) for v in served.values()} == {(MLFLOW_VERSION, before["run_id"])}, served

    # everything logged before the upgrade is still there, read through the new version
    forward = real.port_forward(NAME)
    after = last_json(real.client(AFTER, {"MLFLOW_TRACKING_URI": forward.url, "TUTORIAL_RUN": before["run_id"],
                                          "HISTORY_RUN": history["run_id"], **real.s3.env()}).stdout)
    assert after["params"]["tutorial"] == "remote-tracking" and after["params"]["n_estimators"] == "20", after["params"]
    assert abs(after["prediction_mean"] - after["metrics"]["mean_prediction"]) < 1e-9, after
    assert after["notes"] == "hello from the tutorial\n", after
    assert after["history"] == [[step, 1.0 / (step + 1)] for step in range(100)], after["history"][:5]
    assert after["history_tag"] == PREVIOUS_MLFLOW
    # and the new version takes new runs
    last_json(real.client(HISTORY, {"MLFLOW_TRACKING_URI": forward.url, "VERSION_TAG": MLFLOW_VERSION}).stdout)
    print(json.dumps({"revision_before": old_revision, "revision_after": new_revision, "samples": len(samples),
                      "samples_while_migrating": len(migrating), "timings": real.timings}))
