"""Environments (the operator's env contract) for each MLflow scenario, and the tutorial client script."""
from __future__ import annotations

import secrets

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
TUTORIAL = r"""
import json, os, tempfile
import numpy as np
import mlflow
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor
from sklearn.model_selection import train_test_split

mlflow.set_experiment(os.environ.get("EXPERIMENT", "tutorial"))
mlflow.autolog()
db = load_diabetes()
X_train, X_test, y_train, y_test = train_test_split(db.data, db.target, random_state=0)
with mlflow.start_run() as run:
    rf = RandomForestRegressor(n_estimators=20, max_depth=6, max_features=3, random_state=0)
    rf.fit(X_train, y_train)
    predictions = rf.predict(X_test)
    mlflow.log_param("tutorial", "remote-tracking")
    mlflow.log_metric("mean_prediction", float(np.mean(predictions)))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "notes.txt")
        with open(path, "w") as fh:
            fh.write("hello from the tutorial\n")
        mlflow.log_artifact(path, artifact_path="notes")
    # the model itself is logged by autolog (name "model"), as in the tutorial

run_id = run.info.run_id
got = mlflow.get_run(run_id)
assert got.data.params["tutorial"] == "remote-tracking", got.data.params
assert "mean_prediction" in got.data.metrics and "training_score" in got.data.metrics, got.data.metrics
assert got.data.params.get("n_estimators") == "20", got.data.params  # autolog
notes = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/notes/notes.txt")
assert open(notes).read() == "hello from the tutorial\n"
local_path = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model")
model = mlflow.sklearn.load_model(local_path)
assert np.array_equal(model.predict(X_test), predictions), "the downloaded model predicts other values"
print(json.dumps({"run_id": run_id, "artifact_uri": got.info.artifact_uri, "experiment_id": got.info.experiment_id}))
"""


def last_json(stdout: str) -> dict:
    import json

    return json.loads(stdout.strip().splitlines()[-1])
