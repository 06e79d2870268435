"""Environments (the operator's env contract) for each MLflow scenario, and the tutorial client script."""
from __future__ import annotations

import secrets
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
