"""MLflow's remote-tracking tutorial against your tracking server, with checks.

    pip install mlflow scikit-learn      # any MLflow 3 client
    MLFLOW_TRACKING_URI=http://localhost:5000 python examples/tutorial.py

Autologs a RandomForestRegressor on the diabetes data (autolog logs the model), logs a param, a
metric and an artifact, then reads them back through the server and checks that the downloaded
model predicts what the trained one did. It prints the run's id and artifact URI as JSON; an
AssertionError names what the server got wrong. The tests run this file as it is.
"""
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
