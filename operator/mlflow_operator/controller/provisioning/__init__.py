"""What a TrackingServerClass provisions for each of its servers outside the spec: its database
and role (user) on the class's shared PostgreSQL (postgres.py) or MySQL/MariaDB (mysql.py), and
its MinIO user and prefix policy (minio.py).

The team's Secret (<name>-database, <name>-s3) is the record: while it exists nothing is done (no
connection, no request: it is read from the watch cache), so a converged server costs nothing and
a password is never rotated by a reconcile. Without it, the role's (user's) password is (re)set,
what is missing is created, and the Secret is written once. Under retentionPolicy Retain the
Secrets, databases, roles, users and objects outlive the TrackingServer, and a server of the same
name re-attaches to them.
"""
from __future__ import annotations

import base64
import os
import secrets as random
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ...api import TrackingServer, TrackingServerClass
from ...constants import RETENTION_ANNOTATION
from ...render import naming
from ...render.classes import artifacts_secret_name, database_secret_name, fill
from .. import kube
from ..conditions import Condition
from . import minio, mysql, postgres

DATABASE_PROVISIONED = "DatabaseProvisioned"
ARTIFACTS_PROVISIONED = "ArtifactsProvisioned"
DEPROVISIONED = "Deprovisioned"
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


ENGINES = {"PostgreSQL": postgres, "MySQL": mysql}  # MySQL: MariaDB too
ENGINE_WORDS = {"PostgreSQL": ("PostgreSQL", "role"), "MySQL": ("MySQL", "user")}


def engine_of(cls: TrackingServerClass):
    return ENGINES[cls.spec.database.engine]


def names(ts: TrackingServer, cls: TrackingServerClass) -> tuple[str, str, str | None]:
    """(role or user, database, auth database or None) of this server on its class's engine."""
    return engine_of(cls).names(ts.namespace, ts.name, ts.spec.auth.type == "Basic")


def describe(engine: str, user: str, database: str, auth_database: str | None, host: str, port: int) -> str:
    product, account = ENGINE_WORDS[engine]
    extra = f" and {auth_database} (auth)" if auth_database else ""
    return f"{product} database {database}{extra}, owned by {account} {user}, on {host}:{port}"


def admin_password(admin_uri: str) -> str:
    return unquote(urlsplit(admin_uri).password or "")


def read_admin_secret(cls: TrackingServerClass, name: str, keys: list[str], condition_type: str) -> list[str]:
    """The admin Secret's values from the operator's namespace; ProvisioningBlocked naming what
    is missing (never a value)."""
    admin = kube.read("v1", "Secret", operator_namespace(), name)
    data = (admin or {}).get("data") or {}
    missing = [k for k in keys if k not in data]
    if admin is None or missing:
        problem = "not found" if admin is None else f"has no key {', '.join(missing)}"
        raise ProvisioningBlocked(Condition(condition_type, False, "AdminSecretNotFound",
                                            f"the admin credentials of TrackingServerClass {cls.name}: Secret {name} "
                                            f"in namespace {operator_namespace()} {problem}"))
    return [base64.b64decode(data[k]).decode().strip() for k in keys]


def write_team_secret(ts: TrackingServer, name: str, data: dict[str, str], summary: str, existing: dict | None) -> None:
    """The team's Secret, owned by the server only under retentionPolicy Delete (ownership.py
    keeps that true when the policy changes)."""
    manifest = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": naming.object_meta(ts, name, naming.TRACKING, owned=ts.spec.retention_policy == "Delete",
                                       annotations={RETENTION_ANNOTATION: ts.spec.retention_policy, SUMMARY_ANNOTATION: summary}),
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    if existing is None:
        kube.create(manifest)
    else:  # auth turned on later: the Secret gains auth-uri (the role's password was just set anew)
        kube.apply(manifest)


def ensure_database(ts: TrackingServer, cls: TrackingServerClass) -> tuple[Condition, str]:
    """The server's database exists and its Secret is in the team's namespace; raises
    ProvisioningBlocked with the reason (never a password) when it cannot be done now."""
    database = cls.spec.database
    secret_name = database_secret_name(ts.name)
    existing = kube.get("v1", "Secret", ts.namespace, secret_name)
    engine = engine_of(cls)
    role, db, auth_db = names(ts, cls)
    if existing is not None:
        keys = set((existing.get("data") or {}))
        if auth_db is None or "auth-uri" in keys:
            summary = existing["metadata"].get("annotations", {}).get(SUMMARY_ANNOTATION, f"database {db}, role {role}")
            return Condition(DATABASE_PROVISIONED, True, "Provisioned", summary), summary
    admin_uri, = read_admin_secret(cls, database.admin_secret_ref.name, [database.admin_secret_ref.key], DATABASE_PROVISIONED)
    wrong = engine.check_admin_uri(admin_uri)
    if wrong:
        raise ProvisioningBlocked(Condition(
            DATABASE_PROVISIONED, False, "AdminSecretInvalid",
            f"the admin URI of TrackingServerClass {cls.name} (Secret {database.admin_secret_ref.name}, key "
            f"{database.admin_secret_ref.key}, engine {database.engine}): {wrong}"))
    host, port = engine.admin_target(admin_uri)
    password = random.token_urlsafe(24)
    databases = [db] + ([auth_db] if auth_db else [])
    try:
        engine.provision(admin_uri, role, databases, password)
    except Exception as exc:  # noqa: BLE001 - the driver's errors, the server down: the reason, no password
        raise ProvisioningBlocked(Condition(
            DATABASE_PROVISIONED, False, "ProvisioningFailed",
            f"{host}:{port}: {postgres.redact(str(exc).strip(), password, admin_uri, admin_password(admin_uri))}")) from None
    data = {"uri": engine.uri(role, password, host, port, db)}
    if auth_db:
        data["auth-uri"] = engine.uri(role, password, host, port, auth_db)
    summary = describe(database.engine, role, db, auth_db, host, port)
    write_team_secret(ts, secret_name, data, summary, existing)
    return Condition(DATABASE_PROVISIONED, True, "Provisioned", summary), summary


MINIO_ADMIN_KEYS = ["access-key-id", "secret-access-key"]


def artifacts_place(ts: TrackingServer, cls: TrackingServerClass) -> minio.Place:
    return minio.place(fill(cls.spec.artifacts.destination_template, ts.namespace, ts.name))


def ensure_artifacts(ts: TrackingServer, cls: TrackingServerClass) -> tuple[Condition, str]:
    """The server's MinIO user and prefix policy exist and its keys are in the team's namespace;
    raises ProvisioningBlocked with the reason (never a key) when it cannot be done now."""
    settings = cls.spec.artifacts.minio
    secret_name = artifacts_secret_name(ts.name)
    existing = kube.get("v1", "Secret", ts.namespace, secret_name)
    user, policy_name = minio.names(ts.namespace, ts.name)
    where = artifacts_place(ts, cls)
    summary = f"MinIO user {user} with policy {policy_name} (objects under {where.uri} only) on {settings.endpoint_url}"
    if existing is not None:
        summary = existing["metadata"].get("annotations", {}).get(SUMMARY_ANNOTATION, summary)
        return Condition(ARTIFACTS_PROVISIONED, True, "Provisioned", summary), summary
    admin_keys = read_admin_secret(cls, settings.admin_secret_ref.name, MINIO_ADMIN_KEYS, ARTIFACTS_PROVISIONED)
    secret_key = random.token_urlsafe(30)  # 40 characters, MinIO's usual secret key length
    try:
        minio.provision(settings.endpoint_url, tuple(admin_keys), settings.region, user, policy_name, where, secret_key)
    except minio.BucketMissing:
        # Buckets are the platform's (versioning, lifecycle, quota): the operator makes users only.
        raise ProvisioningBlocked(Condition(
            ARTIFACTS_PROVISIONED, False, "BucketNotFound",
            f"{settings.endpoint_url}: the bucket {where.bucket} of TrackingServerClass {cls.name}'s "
            "destinationTemplate does not exist: create it (the operator makes users and policies, not buckets)")) from None
    except Exception as exc:  # noqa: BLE001 - MinIO's refusal, MinIO down: the reason, no key
        raise ProvisioningBlocked(Condition(
            ARTIFACTS_PROVISIONED, False, "ProvisioningFailed",
            f"{settings.endpoint_url}: {postgres.redact(str(exc).strip(), secret_key, admin_keys[1])}")) from None
    write_team_secret(ts, secret_name, {"access-key-id": user, "secret-access-key": secret_key}, summary, None)
    return Condition(ARTIFACTS_PROVISIONED, True, "Provisioned", summary), summary


def drop_provisioned(ts: TrackingServer, cls: TrackingServerClass) -> str:
    """Drops the server's databases and role (user), and its MinIO user, policy and objects
    (retentionPolicy Delete; the team's Secrets go by garbage collection, owned by the server).
    Idempotent: what is gone already counts as dropped. Raises ProvisioningBlocked with the
    reason (never a password). Returns what was dropped."""
    done = []
    if cls.spec.database:
        database = cls.spec.database
        engine = engine_of(cls)
        admin_uri, = read_admin_secret(cls, database.admin_secret_ref.name, [database.admin_secret_ref.key], DEPROVISIONED)
        wrong = engine.check_admin_uri(admin_uri)
        if wrong:
            raise ProvisioningBlocked(Condition(DEPROVISIONED, False, "AdminSecretInvalid",
                                                f"the admin URI of TrackingServerClass {cls.name}: {wrong}"))
        role, db, auth_db = engine.names(ts.namespace, ts.name, True)  # the auth database too, if it exists
        host, port = engine.admin_target(admin_uri)
        try:
            engine.drop(admin_uri, role, [db, auth_db])
        except Exception as exc:  # noqa: BLE001 - the driver's errors, the server down: the reason, no password
            raise ProvisioningBlocked(Condition(
                DEPROVISIONED, False, "DropFailed",
                f"{host}:{port}: {postgres.redact(str(exc).strip(), admin_uri, admin_password(admin_uri))}")) from None
        product, account = ENGINE_WORDS[database.engine]
        done.append(f"{product} databases {db} and {auth_db} and {account} {role} on {host}:{port}")
    if cls.spec.artifacts and cls.spec.artifacts.minio:
        settings = cls.spec.artifacts.minio
        admin_keys = read_admin_secret(cls, settings.admin_secret_ref.name, MINIO_ADMIN_KEYS, DEPROVISIONED)
        user, policy_name = minio.names(ts.namespace, ts.name)
        where = artifacts_place(ts, cls)
        try:
            count = minio.drop(settings.endpoint_url, tuple(admin_keys), settings.region, user, policy_name, where)
        except Exception as exc:  # noqa: BLE001 - MinIO's refusal, MinIO down: the reason, no key
            raise ProvisioningBlocked(Condition(
                DEPROVISIONED, False, "DropFailed",
                f"{settings.endpoint_url}: {postgres.redact(str(exc).strip(), admin_keys[1])}")) from None
        done.append(f"MinIO user {user}, policy {policy_name} and {count} objects under {where.uri}")
    return "; ".join(done)


SUMMARY_ANNOTATION = "mlflow-operator.dev/provisioned"
