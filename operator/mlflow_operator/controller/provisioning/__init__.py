"""What a TrackingServerClass provisions for each of its servers outside the spec: today, its
database and role on the class's shared PostgreSQL (postgres.py).

The team's URI Secret (<name>-database) is the record: while it exists nothing is done (no
connection, no request: it is read from the watch cache), so a converged server costs nothing and
a password is never rotated by a reconcile. Without it, the role's password is (re)set, the
databases are created if missing, and the Secret is written once. Under retentionPolicy Retain the
Secret, the databases and the role outlive the TrackingServer, and a server of the same name
re-attaches to them.
"""
from __future__ import annotations

import base64
import os
import secrets as random
from pathlib import Path

from ...api import TrackingServer, TrackingServerClass
from ...constants import RETENTION_ANNOTATION
from ...render import naming
from ...render.classes import database_secret_name
from .. import kube
from ..conditions import Condition
from . import postgres

DATABASE_PROVISIONED = "DatabaseProvisioned"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ProvisioningBlocked(Exception):
    def __init__(self, condition: Condition):
        super().__init__(condition.message)
        self.condition = condition


def operator_namespace() -> str:
    """Where the admin Secrets live: the operator's own namespace."""
    if os.environ.get("MLFLOW_OPERATOR_NAMESPACE"):
        return os.environ["MLFLOW_OPERATOR_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        return "mlflow-operator-system"


def names(ts: TrackingServer) -> tuple[str, str, str | None]:
    role = postgres.identifier(ts.namespace, ts.name)
    auth = postgres.identifier(ts.namespace, ts.name, "auth") if ts.spec.auth.type == "Basic" else None
    return role, role, auth


def ensure_database(ts: TrackingServer, cls: TrackingServerClass) -> tuple[Condition, str]:
    """The server's database exists and its Secret is in the team's namespace; raises
    ProvisioningBlocked with the reason (never a password) when it cannot be done now."""
    database = cls.spec.database
    secret_name = database_secret_name(ts.name)
    existing = kube.get("v1", "Secret", ts.namespace, secret_name)
    role, db, auth_db = names(ts)
    if existing is not None:
        keys = set((existing.get("data") or {}))
        if auth_db is None or "auth-uri" in keys:
            summary = existing["metadata"].get("annotations", {}).get(SUMMARY_ANNOTATION, f"database {db}, role {role}")
            return Condition(DATABASE_PROVISIONED, True, "Provisioned", summary), summary
    admin = kube.read("v1", "Secret", operator_namespace(), database.admin_secret_ref.name)
    raw = ((admin or {}).get("data") or {}).get(database.admin_secret_ref.key)
    if raw is None:
        where = f"Secret {database.admin_secret_ref.name} in namespace {operator_namespace()}"
        problem = "not found" if admin is None else f"has no key {database.admin_secret_ref.key}"
        raise ProvisioningBlocked(Condition(DATABASE_PROVISIONED, False, "AdminSecretNotFound",
                                            f"the admin URI of TrackingServerClass {cls.name}: {where} {problem}"))
    admin_uri = base64.b64decode(raw).decode()
    host, port = postgres.admin_target(admin_uri)
    password = random.token_urlsafe(24)
    databases = [db] + ([auth_db] if auth_db else [])
    try:
        postgres.provision(admin_uri, role, databases, password)
    except Exception as exc:  # noqa: BLE001 - the driver's errors, the server down: the reason, no password
        raise ProvisioningBlocked(Condition(
            DATABASE_PROVISIONED, False, "ProvisioningFailed",
            f"{host}:{port}: {postgres.redact(str(exc).strip(), password, admin_uri)}")) from None
    done = postgres.Provisioned(role, db, auth_db, host, port, password)
    data = {"uri": done.uri(db)}
    if auth_db:
        data["auth-uri"] = done.uri(auth_db)
    summary = done.summary()
    manifest = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": naming.object_meta(ts, secret_name, naming.TRACKING, owned=ts.spec.retention_policy == "Delete",
                                       annotations={RETENTION_ANNOTATION: ts.spec.retention_policy, SUMMARY_ANNOTATION: summary}),
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    if existing is None:
        kube.create(manifest)
    else:  # auth turned on later: the Secret gains auth-uri (the role's password was just set anew)
        kube.apply(manifest)
    return Condition(DATABASE_PROVISIONED, True, "Provisioned", summary), summary


SUMMARY_ANNOTATION = "mlflow-operator.dev/provisioned"
