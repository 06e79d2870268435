"""Deleting a TrackingServer whose class provisioned its database (MariaDB) and MinIO user, on the
real control plane: under retentionPolicy Delete the operator's finalizer holds the deletion
until the database, the user, the MinIO user, its policy and the objects under its prefix are
dropped; while the database server cannot be reached the deletion waits with a condition and a
Warning event that say why and how to release it, and it finishes once fixed; setting Retain on a
server stuck in deletion releases it with everything kept. Under Retain no finalizer is put on,
the deletion finishes at once, nothing is dropped, and a re-created server re-attaches, its rows
and objects intact."""
from __future__ import annotations

import base64
import uuid

import pymysql
import pytest
from botocore.exceptions import ClientError

from tests.cluster.test_operator_provisioning import admin_secret
from tests.cluster.test_operator_provisioning_minio import minio_admin_secret, s3_as
from tests.cluster.test_operator_provisioning_mysql import connect
from tests.operator_fixtures import OPERATOR_NAMESPACE, apply_object, condition, free_port, get_json, wait_for, wait_for_conditions

FINALIZER = "mlflow-operator.dev/deprovision"


def full_class(name: str, db_admin: str, minio_admin: str, bucket: str, s3) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServerClass", "metadata": {"name": name},
            "spec": {"database": {"engine": "MySQL", "adminSecretRef": {"name": db_admin}},
                     "defaults": {"artifacts": {"mode": "Proxied"}}, "enforced": ["backendStore", "artifacts"],
                     "artifacts": {"destinationTemplate": f"s3://{bucket}/{{namespace}}/{{name}}",
                                   "minio": {"endpointUrl": s3.endpoint, "region": s3.region,
                                             "adminSecretRef": {"name": minio_admin}}}}}


def server(namespace: str, name: str, class_name: str, retention: str) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"className": class_name, "retentionPolicy": retention}}


def secret_values(cluster, namespace: str, name: str) -> dict[str, str] | None:
    secret = get_json(cluster, "secret", name, "-n", namespace)
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} if secret else None


def databases(mysql) -> set[str]:
    return {row[0] for row in mysql.query("mysql", "SHOW DATABASES")}


def users(mysql) -> set[str]:
    return {row[0] for row in mysql.query("mysql", "SELECT User FROM mysql.user")}


def objects(s3, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


@pytest.fixture
def setup(cluster, namespace, mysql, s3):
    suffix = namespace[-6:]
    names = {"class": f"full-{suffix}", "db_admin": f"db-admin-{suffix}", "minio_admin": f"minio-admin-{suffix}",
             "bucket": s3.create_bucket("gone-" + uuid.uuid4().hex[:8])}
    apply_object(cluster, admin_secret(names["db_admin"], mysql.uri("")))
    apply_object(cluster, minio_admin_secret(names["minio_admin"], s3.access_key, s3.secret_key))
    apply_object(cluster, full_class(names["class"], names["db_admin"], names["minio_admin"], names["bucket"], s3))
    yield names
    cluster.kubectl("delete", "trackingserverclass", names["class"], "--ignore-not-found", check=False)
    for secret in (names["db_admin"], names["minio_admin"]):
        cluster.kubectl("delete", "secret", secret, "-n", OPERATOR_NAMESPACE, "--ignore-not-found", check=False)


def test_delete_drops_what_the_class_provisioned_and_retain_keeps_it(cluster, operator, namespace, mysql, s3, setup):
    bucket, ns = setup["bucket"], namespace
    for name, retention in (("gone", "Delete"), ("kept", "Retain"), ("released", "Delete")):
        apply_object(cluster, server(ns, name, setup["class"], retention))
    made = {}
    for name in ("gone", "kept", "released"):
        live = wait_for_conditions(cluster, ns, name, timeout=180, op=operator, Ready="True",
                                   DatabaseProvisioned="True", ArtifactsProvisioned="True")
        # The finalizer only where something would have to be dropped.
        assert (FINALIZER in (live["metadata"].get("finalizers") or [])) == (name != "kept")
        db, keys = secret_values(cluster, ns, f"{name}-database"), secret_values(cluster, ns, f"{name}-s3")
        with connect(db["uri"]) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE runs (id VARCHAR(32) PRIMARY KEY)")
            cur.execute(f"INSERT INTO runs VALUES ('run-of-{name}')")
            cur.execute("SELECT DATABASE(), CURRENT_USER()")
            database, user = cur.fetchone()
        s3_as(s3, (keys["access-key-id"], keys["secret-access-key"])).put_object(
            Bucket=bucket, Key=f"{ns}/{name}/1/model.pkl", Body=name.encode())
        made[name] = {"db": db, "keys": keys, "database": database, "user": user.split("@")[0]}
    assert {m["database"] for m in made.values()} <= databases(mysql)

    # Delete while MariaDB cannot be reached: the deletion waits, says why and how to release it.
    apply_object(cluster, admin_secret(setup["db_admin"], mysql.uri("").replace(f":{mysql.port}/", f":{free_port()}/")))
    for name in ("gone", "released"):
        cluster.kubectl("delete", "trackingserver", name, "-n", ns, "--wait=false")
    for name in ("gone", "released"):
        stuck = wait_for(f"{name} waiting on its finalizer", lambda: (lambda o: o if condition(o, "Deprovisioned").get(
            "reason") == "DropFailed" else None)(get_json(cluster, "trackingserver", name, "-n", ns)), timeout=90)
        message = condition(stuck, "Deprovisioned")["message"]
        assert "Can't connect" in message and "retentionPolicy to Retain" in message and mysql.password not in message
    events = [e for e in get_json(cluster, "events", "-n", ns)["items"] if e["reason"] == "DropFailed"]
    assert events and all(e["type"] == "Warning" for e in events)
    assert {made[n]["database"] for n in made} <= databases(mysql)  # nothing dropped yet
    # Released by setting Retain: the deletion finishes, everything of it is kept.
    cluster.kubectl("patch", "trackingserver", "released", "-n", ns, "--type=merge", "-p", '{"spec":{"retentionPolicy":"Retain"}}')
    wait_for("released gone", lambda: get_json(cluster, "trackingserver", "released", "-n", ns) is None, timeout=90)
    assert made["released"]["database"] in databases(mysql) and made["released"]["user"] in users(mysql)
    assert objects(s3, bucket, f"{ns}/released/") == [f"{ns}/released/1/model.pkl"]

    # Fixed: the Delete server's database, user, MinIO user and objects are dropped, then it goes.
    apply_object(cluster, admin_secret(setup["db_admin"], mysql.uri("")))
    wait_for("gone gone", lambda: get_json(cluster, "trackingserver", "gone", "-n", ns) is None, timeout=90)
    assert made["gone"]["database"] not in databases(mysql) and made["gone"]["user"] not in users(mysql)
    with pytest.raises(pymysql.err.OperationalError, match="Access denied"):
        connect(made["gone"]["db"]["uri"]).close()
    assert objects(s3, bucket, f"{ns}/gone/") == []
    with pytest.raises(ClientError) as refused:
        s3_as(s3, (made["gone"]["keys"]["access-key-id"], made["gone"]["keys"]["secret-access-key"])).list_objects_v2(
            Bucket=bucket, Prefix=f"{ns}/gone/")
    assert refused.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    wait_for("gone's Secrets collected", lambda: secret_values(cluster, ns, "gone-database") is None
             and secret_values(cluster, ns, "gone-s3") is None, timeout=60)
    assert any(e["reason"] == "Deprovisioned" for e in get_json(cluster, "events", "-n", ns)["items"])

    # Retain: gone at once, nothing dropped; re-created, it re-attaches with its rows and objects.
    cluster.kubectl("delete", "trackingserver", "kept", "-n", ns, "--timeout=30s")
    assert secret_values(cluster, ns, "kept-database") == made["kept"]["db"]
    assert made["kept"]["database"] in databases(mysql) and made["kept"]["user"] in users(mysql)
    apply_object(cluster, server(ns, "kept", setup["class"], "Retain"))
    wait_for_conditions(cluster, ns, "kept", timeout=180, op=operator, Ready="True", DatabaseProvisioned="True",
                        ArtifactsProvisioned="True")
    assert secret_values(cluster, ns, "kept-database") == made["kept"]["db"]
    assert secret_values(cluster, ns, "kept-s3") == made["kept"]["keys"]
    with connect(made["kept"]["db"]["uri"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM runs")
        assert cur.fetchall() == (("run-of-kept",),)
    kept = s3_as(s3, (made["kept"]["keys"]["access-key-id"], made["kept"]["keys"]["secret-access-key"]))
    assert kept.get_object(Bucket=bucket, Key=f"{ns}/kept/1/model.pkl")["Body"].read() == b"kept"
