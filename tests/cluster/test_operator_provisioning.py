"""A TrackingServerClass with `database` on the real control plane and a real PostgreSQL (the
operator runs as a host process, so the admin URI is a loopback one): each team's server gets its
own database and role; team A's credentials are refused by team B's database; the team namespaces
hold no admin credentials; status names what was provisioned, and no password appears in status,
events or the operator's log; a missing admin
Secret and a wrong admin password give a condition with the reason, and fixing them recovers; a
server deleted under Retain and re-created re-attaches to its database, runs intact."""
from __future__ import annotations

import base64
import json

import psycopg2
import pytest

from tests.operator_fixtures import OPERATOR_NAMESPACE, apply_object, condition, get_json, wait_for, wait_for_conditions


def admin_secret(name: str, uri: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
            "stringData": {"uri": uri}}


def db_class(name: str, admin: str) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServerClass", "metadata": {"name": name},
            "spec": {"database": {"adminSecretRef": {"name": admin}}, "enforced": ["backendStore"]}}


def server(namespace: str, class_name: str, **spec) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
            "metadata": {"name": "team", "namespace": namespace}, "spec": {"className": class_name, **spec}}


def team_uris(cluster, namespace: str) -> dict[str, str]:
    secret = get_json(cluster, "secret", "team-database", "-n", namespace)
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


@pytest.fixture
def setup(cluster, namespace, postgres):
    suffix = namespace[-6:]
    other = f"team-b-{suffix}"
    cluster.kubectl("create", "namespace", other)
    names = {"class": f"db-{suffix}", "admin": f"pg-admin-{suffix}", "other": other}
    yield names
    for kind, name, ns in (("trackingserverclass", names["class"], None), ("secret", names["admin"], OPERATOR_NAMESPACE)):
        cluster.kubectl("delete", kind, name, "--ignore-not-found", *(("-n", ns) if ns else ()), check=False)
    cluster.kubectl("delete", "namespace", other, "--wait=false", "--ignore-not-found", check=False)


def test_each_team_gets_its_own_database_and_cannot_reach_the_others(cluster, operator, namespace, postgres, setup):
    admin_uri = postgres.uri("postgres")
    apply_object(cluster, db_class(setup["class"], setup["admin"]))
    # The admin Secret does not exist yet: a condition says so, nothing else is applied.
    apply_object(cluster, server(namespace, setup["class"]))
    live = wait_for_conditions(cluster, namespace, "team", timeout=60, op=operator, DatabaseProvisioned="False")
    assert condition(live, "DatabaseProvisioned")["reason"] == "AdminSecretNotFound"
    assert get_json(cluster, "deployment", "team", "-n", namespace) is None
    # A wrong admin password: the server's own refusal, without the password.
    wrong = admin_uri.replace(postgres.password, "not-the-password")
    apply_object(cluster, admin_secret(setup["admin"], wrong))
    live = wait_for("ProvisioningFailed", lambda: (lambda o: o if condition(o, "DatabaseProvisioned").get("reason") == "ProvisioningFailed" else None)(
        get_json(cluster, "trackingserver", "team", "-n", namespace)), timeout=90)
    message = condition(live, "DatabaseProvisioned")["message"]
    assert "password authentication failed" in message and "not-the-password" not in message
    # Fixed: both teams converge, each on its own database.
    apply_object(cluster, admin_secret(setup["admin"], admin_uri))
    apply_object(cluster, server(setup["other"], setup["class"]))
    for ns in (namespace, setup["other"]):
        live = wait_for_conditions(cluster, ns, "team", timeout=180, op=operator, Ready="True", DatabaseProvisioned="True")
        assert "mlflow_" in live["status"]["database"]
    a, b = team_uris(cluster, namespace)["uri"], team_uris(cluster, setup["other"])["uri"]
    assert a != b
    with psycopg2.connect(a, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_database(), current_user")
        database, role = cur.fetchone()
    b_database = b.rsplit("/", 1)[1]
    with pytest.raises(psycopg2.OperationalError, match="permission denied"):
        psycopg2.connect(a.rsplit("/", 1)[0] + "/" + b_database, connect_timeout=5).close()
    # No admin credential in the team namespaces, no password in status.
    for ns in (namespace, setup["other"]):
        for item in (get_json(cluster, "secrets", "-n", ns) or {}).get("items", []):
            for value in (item.get("data") or {}).values():
                assert postgres.password not in base64.b64decode(value).decode(errors="replace")
        said = json.dumps([get_json(cluster, "trackingserver", "team", "-n", ns)["status"],
                           get_json(cluster, "events", "-n", ns)["items"]])  # status and events
        for password in (postgres.password, a.split(":")[2].split("@")[0], b.split(":")[2].split("@")[0]):
            assert password not in said and password not in operator.log_path.read_text(errors="replace")
    # Deleted under Retain and re-created: the same database, the same Secret.
    cluster.kubectl("delete", "trackingserver", "team", "-n", namespace)
    wait_for("the server gone", lambda: get_json(cluster, "trackingserver", "team", "-n", namespace) is None)
    assert team_uris(cluster, namespace)["uri"] == a
    apply_object(cluster, server(namespace, setup["class"]))
    wait_for_conditions(cluster, namespace, "team", timeout=180, op=operator, Ready="True", DatabaseProvisioned="True")
    assert team_uris(cluster, namespace)["uri"] == a
    assert postgres.query(database, "SELECT 1")  # the database is still there
    assert role == database


def test_names_at_the_length_limits_are_provisioned(cluster, operator, namespace, postgres, setup):
    """A 63-character namespace and a 40-character name (both at their limits), with '-' runs and
    a leading digit: the role and database names stay within PostgreSQL's 63 bytes, and work."""
    long_namespace = ("0-" + "n" * 54 + "--" + namespace[-5:])[:63]
    long_name = "t" + "-x" * 19 + "9"
    assert len(long_namespace) == 63 and len(long_name) == 40
    cluster.kubectl("create", "namespace", long_namespace)
    try:
        apply_object(cluster, admin_secret(setup["admin"], postgres.uri("postgres")))
        apply_object(cluster, db_class(setup["class"], setup["admin"]))
        ts = server(long_namespace, setup["class"], auth={"type": "Basic"})
        ts["metadata"]["name"] = long_name
        apply_object(cluster, ts)
        live = wait_for_conditions(cluster, long_namespace, long_name, timeout=180, op=operator, DatabaseProvisioned="True")
        secret = get_json(cluster, "secret", f"{long_name}-database", "-n", long_namespace)
        uris = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        for key in ("uri", "auth-uri"):
            database = uris[key].rsplit("/", 1)[1]
            assert len(database.encode()) <= 63 and database in live["status"]["database"]
            with psycopg2.connect(uris[key], connect_timeout=5) as conn, conn.cursor() as cur:
                cur.execute("SELECT current_database()")
                assert cur.fetchone()[0] == database
        # retentionPolicy Delete: the Secret follows (owned by the server, garbage-collected with it).
        cluster.kubectl("patch", "trackingserver", long_name, "-n", long_namespace, "--type=merge", "-p",
                        '{"spec":{"retentionPolicy":"Delete"}}')
        wait_for("the database Secret owned by the server", lambda: (get_json(
            cluster, "secret", f"{long_name}-database", "-n", long_namespace)["metadata"].get("ownerReferences") or [None])[0])
    finally:
        cluster.kubectl("delete", "namespace", long_namespace, "--wait=false", "--ignore-not-found", check=False)
