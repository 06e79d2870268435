"""A TrackingServerClass with `database.engine: MySQL` on the real control plane and a real MariaDB
(Debian's; the operator runs as a host process, so the admin URI is a loopback one): two teams'
servers from one class converge, each on its own database and user (and auth database); team A's
credentials are refused on team B's database by MariaDB itself; a missing admin Secret, a URI of
the wrong engine, a MariaDB that is down and a wrong admin password each give a condition with the
reason (never a password), and fixing them recovers; team B's names are at the length limits (a
63-character namespace with odd runs of '-', a 40-character name); no password appears in status,
events or the operator's log; deleted under Retain and re-created, a server re-attaches to its
database with its rows intact."""
from __future__ import annotations

import base64
import json

import pymysql
import pytest

from tests.cluster.test_operator_provisioning import admin_secret, server, team_uris
from tests.operator_fixtures import OPERATOR_NAMESPACE, apply_object, condition, free_port, get_json, wait_for, wait_for_conditions

LONG_NAME = "t" + "-x" * 19 + "9"  # 40 characters, the longest name a TrackingServer may have


def mysql_class(name: str, admin: str) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServerClass", "metadata": {"name": name},
            "spec": {"database": {"engine": "MySQL", "adminSecretRef": {"name": admin}},
                     "defaults": {"auth": {"type": "Basic"}}, "enforced": ["backendStore", "auth"]}}


def connect(uri: str, database: str | None = None):
    """A login as the URI's user, to its database or another one."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    return pymysql.connect(host=parts.hostname, port=parts.port, user=unquote(parts.username),
                           password=unquote(parts.password), database=database or parts.path.lstrip("/"),
                           connect_timeout=5, autocommit=True)


def provisioned_reason(cluster, namespace: str, name: str, reason: str, timeout: float = 90) -> dict:
    def probe():
        live = get_json(cluster, "trackingserver", name, "-n", namespace)
        return live if condition(live, "DatabaseProvisioned").get("reason") == reason else None
    return wait_for(f"DatabaseProvisioned {reason}", probe, timeout=timeout)


@pytest.fixture
def setup(cluster, namespace, mysql):
    suffix = namespace[-5:]
    long_namespace = ("0-" + "n" * 54 + "--" + suffix)[:63]
    assert len(long_namespace) == 63
    cluster.kubectl("create", "namespace", long_namespace)
    names = {"class": f"mysql-{suffix}", "admin": f"mysql-admin-{suffix}", "other": long_namespace}
    yield names
    for kind, name, ns in (("trackingserverclass", names["class"], None), ("secret", names["admin"], OPERATOR_NAMESPACE)):
        cluster.kubectl("delete", kind, name, "--ignore-not-found", *(("-n", ns) if ns else ()), check=False)
    cluster.kubectl("delete", "namespace", long_namespace, "--wait=false", "--ignore-not-found", check=False)


def test_two_teams_get_their_own_mariadb_database_and_cannot_reach_each_other(cluster, operator, namespace, mysql, setup):
    admin_uri = mysql.uri("")
    other = setup["other"]
    apply_object(cluster, mysql_class(setup["class"], setup["admin"]))
    apply_object(cluster, server(namespace, setup["class"]))
    # No admin Secret yet: said so, nothing else applied.
    live = wait_for_conditions(cluster, namespace, "team", timeout=60, op=operator, DatabaseProvisioned="False")
    assert condition(live, "DatabaseProvisioned")["reason"] == "AdminSecretNotFound"
    assert get_json(cluster, "deployment", "team", "-n", namespace) is None
    # A PostgreSQL URI in a MySQL class: the engine mismatch is named, no password quoted.
    apply_object(cluster, admin_secret(setup["admin"], admin_uri.replace("mysql://", "postgresql://")))
    message = condition(provisioned_reason(cluster, namespace, "team", "AdminSecretInvalid"), "DatabaseProvisioned")["message"]
    assert "must start with mysql://" in message and mysql.password not in message
    # MariaDB down (nothing listens there): the driver's words.
    apply_object(cluster, admin_secret(setup["admin"], admin_uri.replace(f":{mysql.port}/", f":{free_port()}/")))
    message = condition(provisioned_reason(cluster, namespace, "team", "ProvisioningFailed"), "DatabaseProvisioned")["message"]
    assert "Can't connect" in message and mysql.password not in message
    # A wrong admin password: MariaDB's refusal, without the password.
    apply_object(cluster, admin_secret(setup["admin"], admin_uri.replace(mysql.password, "not-the-password")))
    wait_for("Access denied", lambda: "Access denied" in condition(get_json(
        cluster, "trackingserver", "team", "-n", namespace), "DatabaseProvisioned").get("message", ""), timeout=90)
    message = condition(get_json(cluster, "trackingserver", "team", "-n", namespace), "DatabaseProvisioned")["message"]
    assert "not-the-password" not in message
    # Fixed: both teams converge, each on its own database; team B's names are at the limits.
    apply_object(cluster, admin_secret(setup["admin"], admin_uri))
    team_b = server(other, setup["class"])
    team_b["metadata"]["name"] = LONG_NAME
    apply_object(cluster, team_b)
    for ns, name in ((namespace, "team"), (other, LONG_NAME)):
        live = wait_for_conditions(cluster, ns, name, timeout=180, op=operator, Ready="True", DatabaseProvisioned="True")
        assert live["status"]["database"].startswith("MySQL database mlflow_")
    a = team_uris(cluster, namespace)
    b_secret = get_json(cluster, "secret", f"{LONG_NAME}-database", "-n", other)
    b = {k: base64.b64decode(v).decode() for k, v in b_secret["data"].items()}
    for uris in (a, b):
        for key in ("uri", "auth-uri"):
            with connect(uris[key]) as conn, conn.cursor() as cur:
                cur.execute("SELECT DATABASE(), CURRENT_USER()")
                database, user = cur.fetchone()
            assert len(database.encode()) <= 64 and len(user.split("@")[0].encode()) <= 32
    with connect(a["uri"]) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE runs (id VARCHAR(32) PRIMARY KEY)")
        cur.execute("INSERT INTO runs VALUES ('run-of-team-a')")
    # Team A's user on team B's databases: refused by MariaDB.
    for key in ("uri", "auth-uri"):
        b_database = b[key].rsplit("/", 1)[1]
        with pytest.raises(pymysql.err.OperationalError, match="Access denied for user") as refused:
            connect(a["uri"], b_database).close()
        assert refused.value.args[0] == 1044  # ER_DBACCESS_DENIED_ERROR: logged in, no access to that database
    # No admin credential in the team namespaces; no password in status, events or the operator's log.
    passwords = [mysql.password] + [u.split(":")[2].split("@")[0] for u in (a["uri"], b["uri"])]
    for ns in (namespace, other):
        for item in (get_json(cluster, "secrets", "-n", ns) or {}).get("items", []):
            for value in (item.get("data") or {}).values():
                assert mysql.password not in base64.b64decode(value).decode(errors="replace")
        said = json.dumps([get_json(cluster, "trackingservers", "-n", ns)["items"][0]["status"],
                           get_json(cluster, "events", "-n", ns)["items"]])
        assert "DatabaseProvisioned" in said  # the Warning events are there to be searched
        for password in passwords:
            assert password not in said
    log = operator.log_path.read_text(errors="replace")
    assert all(password not in log for password in passwords)
    # Deleted under Retain and re-created: the same Secret, the same database, the row intact.
    cluster.kubectl("delete", "trackingserver", "team", "-n", namespace)
    wait_for("the server gone", lambda: get_json(cluster, "trackingserver", "team", "-n", namespace) is None)
    assert team_uris(cluster, namespace) == a
    apply_object(cluster, server(namespace, setup["class"]))
    wait_for_conditions(cluster, namespace, "team", timeout=180, op=operator, Ready="True", DatabaseProvisioned="True")
    assert team_uris(cluster, namespace) == a
    with connect(a["uri"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM runs")
        assert cur.fetchall() == (("run-of-team-a",),)
