"""Per-server databases and roles on a shared PostgreSQL.

Names are derived from the TrackingServer's namespace and name: readable, stable, within
PostgreSQL's 63 bytes, and collision-free across namespaces (a digest of namespace/name closes
every name, so team-a/b-c and team-a-b/c differ).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1, in bytes
DIGEST = 8


def identifier(namespace: str, name: str, suffix: str = "") -> str:
    """mlflow_<namespace>_<name>[_suffix]_<digest>, lower case, [a-z0-9_] only, at most 63 bytes."""
    digest = hashlib.sha256(f"{namespace}/{name}{suffix}".encode()).hexdigest()[:DIGEST]
    readable = re.sub(r"[^a-z0-9]+", "_", f"{namespace}_{name}".lower()).strip("_")
    tail = (f"_{suffix}" if suffix else "") + f"_{digest}"
    head = "mlflow_"
    return head + readable[: MAX_IDENTIFIER - len(head) - len(tail)].rstrip("_") + tail


@dataclass(frozen=True)
class Provisioned:
    role: str
    database: str
    auth_database: str | None
    host: str
    port: int
    password: str

    def uri(self, database: str) -> str:
        return f"postgresql://{quote(self.role, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}/{database}"

    def summary(self) -> str:
        extra = f" and {self.auth_database} (auth)" if self.auth_database else ""
        return f"PostgreSQL database {self.database}{extra}, owned by role {self.role}, on {self.host}:{self.port}"


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
