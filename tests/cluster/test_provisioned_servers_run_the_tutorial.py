"""Two teams' servers from one class that provisions everything (MariaDB database and basic-auth
database, MinIO user), converged by the operator on the real control plane, each serve the seed
tutorial with what was provisioned: the Deployment's server environment, its Secrets' values put
in as the kubelet would, runs `mlflow-entrypoint migrate` and `serve` (the server image's
virtualenv) against the real MariaDB and MinIO, and the stock client logs the tutorial; the
artifacts land under the team's own prefix. Deleted under Retain and re-created, team A's server
finds its run."""
from __future__ import annotations

import uuid

import pytest

from tests.cluster.test_operator_deprovisioning import secret_values
from tests.cluster.test_operator_provisioning import admin_secret
from tests.cluster.test_operator_provisioning_minio import minio_admin_secret
from tests.operator_fixtures import OPERATOR_NAMESPACE, apply_object, get_json, wait_for, wait_for_conditions
from tests.workload.server_env import TUTORIAL, last_json

pytestmark = pytest.mark.timeout(1200)

# What the pod's own runtime sets: the test's server process gets its own address and scratch dir.
POD_ONLY = {"MLFLOW_OPERATOR_HOST", "MLFLOW_OPERATOR_PORT", "MLFLOW_OPERATOR_SCRATCH_DIR", "MLFLOW_OPERATOR_POD_IPS"}


def team_class(name: str, db_admin: str, minio_admin: str, bucket: str, s3) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServerClass", "metadata": {"name": name},
            "spec": {"database": {"engine": "MySQL", "adminSecretRef": {"name": db_admin}},
                     "defaults": {"artifacts": {"mode": "Proxied"}, "auth": {"type": "Basic"}},
                     "enforced": ["backendStore", "artifacts", "auth"],
                     "artifacts": {"destinationTemplate": f"s3://{bucket}/{{namespace}}/{{name}}",
                                   "minio": {"endpointUrl": s3.endpoint, "region": s3.region,
                                             "adminSecretRef": {"name": minio_admin}}}}}


def team_server(namespace: str, class_name: str) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
            "metadata": {"name": "mlflow", "namespace": namespace}, "spec": {"className": class_name}}


def server_env(cluster, namespace: str) -> dict[str, str]:
    """The server container's environment as the kubelet gives it: values, and Secret keys read."""
    deployment = get_json(cluster, "deployment", "mlflow", "-n", namespace)
    env = {}
    for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if var["name"] in POD_ONLY:
            continue
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secret_values(cluster, namespace, ref["name"])[ref["key"]]
    return env


@pytest.fixture
def setup(cluster, namespace, mysql, s3):
    suffix = namespace[-6:]
    other = f"team-b-{suffix}"
    cluster.kubectl("create", "namespace", other)
    names = {"class": f"tutorial-{suffix}", "db_admin": f"db-admin-{suffix}", "minio_admin": f"minio-admin-{suffix}",
             "bucket": s3.create_bucket("tutorial-" + uuid.uuid4().hex[:8]), "other": other}
    apply_object(cluster, admin_secret(names["db_admin"], mysql.uri("")))
    apply_object(cluster, minio_admin_secret(names["minio_admin"], s3.access_key, s3.secret_key))
    apply_object(cluster, team_class(names["class"], names["db_admin"], names["minio_admin"], names["bucket"], s3))
    yield names
    cluster.kubectl("delete", "trackingserverclass", names["class"], "--ignore-not-found", check=False)
    for secret in (names["db_admin"], names["minio_admin"]):
        cluster.kubectl("delete", "secret", secret, "-n", OPERATOR_NAMESPACE, "--ignore-not-found", check=False)
    cluster.kubectl("delete", "namespace", other, "--wait=false", "--ignore-not-found", check=False)


def test_two_provisioned_teams_log_the_tutorial_into_their_own_stores(cluster, operator, namespace, s3, setup,
                                                                      entrypoint, mlflow_server, client):
    bucket = setup["bucket"]
    teams = (namespace, setup["other"])
    for ns in teams:
        apply_object(cluster, team_server(ns, setup["class"]))
    runs = {}
    for ns in teams:
        wait_for_conditions(cluster, ns, "mlflow", timeout=180, op=operator, Ready="True",
                            DatabaseProvisioned="True", ArtifactsProvisioned="True")
        env = server_env(cluster, ns)
        assert env["MLFLOW_OPERATOR_BACKEND_STORE_URI"].startswith("mysql://mlflow_")
        assert env["MLFLOW_OPERATOR_AUTH_DATABASE_URI"].startswith("mysql://mlflow_")
        migrated = entrypoint("migrate", env)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        srv = mlflow_server(env, name=f"server-{ns[:8]}")
        login = {"MLFLOW_TRACKING_URI": srv.url, "MLFLOW_TRACKING_USERNAME": env["MLFLOW_OPERATOR_ADMIN_USERNAME"],
                 "MLFLOW_TRACKING_PASSWORD": env["MLFLOW_OPERATOR_ADMIN_PASSWORD"]}
        runs[ns] = last_json(client(TUTORIAL, {**login, "EXPERIMENT": "tutorial"}).stdout)
        srv.stop()
        keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{ns}/mlflow/").get("Contents", [])]
        assert any(k.endswith("MLmodel") for k in keys) and any(k.endswith("notes/notes.txt") for k in keys), keys
    everything = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert all(k.startswith(tuple(f"{ns}/mlflow/" for ns in teams)) for k in everything), everything
    # Team A's server deleted (Retain) and re-created: its run is there.
    cluster.kubectl("delete", "trackingserver", "mlflow", "-n", namespace, "--timeout=60s")
    wait_for("the server gone", lambda: get_json(cluster, "trackingserver", "mlflow", "-n", namespace) is None)
    apply_object(cluster, team_server(namespace, setup["class"]))
    wait_for_conditions(cluster, namespace, "mlflow", timeout=180, op=operator, Ready="True", DatabaseProvisioned="True")
    env = server_env(cluster, namespace)
    srv = mlflow_server(env, name="server-again")
    check = f"""
import mlflow
run = mlflow.get_run({runs[namespace]["run_id"]!r})
assert run.data.params["tutorial"] == "remote-tracking", run.data.params
print("found")
"""
    login = {"MLFLOW_TRACKING_URI": srv.url, "MLFLOW_TRACKING_USERNAME": env["MLFLOW_OPERATOR_ADMIN_USERNAME"],
             "MLFLOW_TRACKING_PASSWORD": env["MLFLOW_OPERATOR_ADMIN_PASSWORD"]}
    assert client(check, login).stdout.strip().endswith("found")
