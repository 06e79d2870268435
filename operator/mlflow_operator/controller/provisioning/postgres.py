"""Per-server databases and roles on a shared PostgreSQL.

Names are derived from the TrackingServer's namespace and name: readable, stable, within
PostgreSQL's 63 bytes, and collision-free across namespaces (a digest of namespace/name closes
every name, so team-a/b-c and team-a-b/c differ).
"""
from __future__ import annotations

import hashlib
import re
from urllib.parse import quote, urlsplit

MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1, in bytes
DIGEST = 8


def identifier(namespace: str, name: str, suffix: str = "", max_length: int = MAX_IDENTIFIER) -> str:
    """mlflow_<namespace>_<name>[_suffix]_<digest>, lower case, [a-z0-9_] only, at most
    `max_length` bytes (PostgreSQL's 63 by default; MySQL's are in mysql.py)."""
    digest = hashlib.sha256(f"{namespace}/{name}{suffix}".encode()).hexdigest()[:DIGEST]
    readable = re.sub(r"[^a-z0-9]+", "_", f"{namespace}_{name}".lower()).strip("_")
    tail = (f"_{suffix}" if suffix else "") + f"_{digest}"
    head = "mlflow_"
    return head + readable[: max_length - len(head) - len(tail)].rstrip("_") + tail


def names(namespace: str, name: str, auth: bool) -> tuple[str, str, str | None]:
    """(role, database, auth database or None): the role and its database share a name."""
    role = identifier(namespace, name)
    return role, role, identifier(namespace, name, "auth") if auth else None


SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")


def check_admin_uri(admin_uri: str) -> str | None:
    """What is wrong with the admin URI's form (never quoting it), or None."""
    parts = urlsplit(admin_uri)
    if parts.scheme not in SCHEMES:
        return f"the admin URI must start with postgresql://, not {parts.scheme or '(no scheme)'}://"
    return None


def uri(role: str, password: str, host: str, port: int, database: str) -> str:
    return f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}@{host}:{port}/{database}"


def redact(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


def admin_target(admin_uri: str) -> tuple[str, int]:
    parts = urlsplit(admin_uri)
    return parts.hostname or "localhost", parts.port or 5432


def provision(admin_uri: str, role: str, databases: list[str], password: str, timeout: int = 10) -> None:
    """Creates the role (or sets its password: a new Secret means the old one is lost) and each
    database owned by it, reachable by that role only. Idempotent."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(admin_uri, connect_timeout=timeout)
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(sql.SQL(verb + " ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %s").format(
                sql.Identifier(role)), (password,))
            # The admin must be a member to create databases owned by the role (PostgreSQL 16+).
            cur.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))
            for database in databases:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if not cur.fetchone():
                    cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))
                cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
                cur.execute(sql.SQL("GRANT ALL ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(role)))
    finally:
        conn.close()


def drop(admin_uri: str, role: str, databases: list[str], timeout: int = 10) -> None:
    """Drops the databases and the role (retentionPolicy Delete): sessions still connected to a
    database are ended first (the server's pods are gone, a straggler must not keep it). Idempotent."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(admin_uri, connect_timeout=timeout)
    try:
        conn.autocommit = True  # DROP DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            for database in databases:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database)))
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    finally:
        conn.close()
