"""A team's server from a TrackingServerClass runs the seed tutorial: the class (PostgreSQL and
MinIO, as examples/classes/on-premises.yaml) and a team's two-line spec are merged and rendered
as the operator does, and the rendered server container's environment (its Secrets' values put
in, as the kubelet would) is served by `mlflow-entrypoint serve` against real PostgreSQL and
MinIO. The stock client's artifacts land under the team's own prefix."""
from __future__ import annotations

import uuid

import pytest
from mlflow_operator.api import load_trackingserver, load_trackingserverclass
from mlflow_operator.crd import trackingserver_schema
from mlflow_operator.render import render
from mlflow_operator.render.classes import apply_class

from .server_env import TUTORIAL, last_json

pytestmark = pytest.mark.timeout(900)

# What the pod's own runtime sets: the test's server process gets its own address and scratch dir.
POD_ONLY = {"MLFLOW_OPERATOR_HOST", "MLFLOW_OPERATOR_PORT", "MLFLOW_OPERATOR_SCRATCH_DIR", "MLFLOW_OPERATOR_POD_IPS"}


def on_premises_class(s3, bucket: str) -> dict:
    return {
        "apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServerClass", "metadata": {"name": "on-premises"},
        "spec": {
            "defaults": {
                "backendStore": {"type": "Database", "uri": {"secretKeyRef": {"name": "mlflow-db", "key": "uri"}}},
                "artifacts": {"mode": "Proxied", "s3": {
                    "endpointUrl": s3.endpoint, "region": s3.region,
                    "accessKeyId": {"secretKeyRef": {"name": "mlflow-s3", "key": "access-key-id"}},
                    "secretAccessKey": {"secretKeyRef": {"name": "mlflow-s3", "key": "secret-access-key"}}}},
            },
            "enforced": ["artifacts"],
            "artifacts": {"destinationTemplate": f"s3://{bucket}/{{namespace}}/{{name}}"},
        },
    }


def server_env(team_namespace: str, cls: dict, secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    team = {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
            "metadata": {"name": "mlflow", "namespace": team_namespace}, "spec": {"className": "on-premises"}}
    merged = apply_class(team, load_trackingserverclass(cls), trackingserver_schema()["properties"]["spec"])
    deployment = next(m for m in render(load_trackingserver(merged.body)) if m["kind"] == "Deployment")
    env = {}
    for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if var["name"] in POD_ONLY:
            continue
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[(ref["name"], ref["key"])]
    return env


def test_a_team_server_from_a_class_runs_the_tutorial_into_its_own_prefix(mlflow_server, client, migrated_pg_uri, s3):
    bucket = s3.create_bucket("classes-" + uuid.uuid4().hex[:8])
    secrets = {("mlflow-db", "uri"): migrated_pg_uri, ("mlflow-s3", "access-key-id"): s3.access_key,
               ("mlflow-s3", "secret-access-key"): s3.secret_key}
    env = server_env("team-fraud", on_premises_class(s3, bucket), secrets)
    assert env["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"] == f"s3://{bucket}/team-fraud/mlflow"
    srv = mlflow_server(env)
    out = last_json(client(TUTORIAL, {"MLFLOW_TRACKING_URI": srv.url, "EXPERIMENT": "tutorial-" + uuid.uuid4().hex[:6]}).stdout)
    assert out["artifact_uri"].startswith("mlflow-artifacts:/")
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert keys and all(k.startswith("team-fraud/mlflow/") for k in keys), keys
    assert any(k.endswith("MLmodel") for k in keys), keys
