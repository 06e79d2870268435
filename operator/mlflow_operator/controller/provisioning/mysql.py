"""Per-server databases and users on a shared MySQL or MariaDB.

MySQL limits database names to 64 bytes and user names to 32 (MariaDB allows longer users; the
stricter limit holds for both); a database's GRANT pattern, its '_' escaped, must fit the 64 too. Names are derived like PostgreSQL's (postgres.identifier): the
readable part shortened, a digest of namespace/name last, so they are stable and collision-free.
The user is granted everything on its own databases and nothing else (no global privilege): its
login to another team's database is refused by the server ("Access denied ... to database").
"""
from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

from .postgres import identifier

MAX_DATABASE = 64
MAX_USER = 32
DEFAULT_PORT = 3306
SCHEMES = ("mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql")


def names(namespace: str, name: str, auth: bool) -> tuple[str, str, str | None]:
    """(user, database, auth database or None)."""
    user = identifier(namespace, name, max_length=MAX_USER)
    return user, _database(namespace, name), _database(namespace, name, "auth") if auth else None


def _database(namespace: str, name: str, suffix: str = "") -> str:
    """A database name whose GRANT pattern (each '_' escaped) is within the 64 bytes too: the
    server checks the pattern's length, not the name's."""
    limit = MAX_DATABASE
    while len(_grant_pattern(database := identifier(namespace, name, suffix, max_length=limit))) > MAX_DATABASE:
        limit -= 1
    return database


def admin_target(admin_uri: str) -> tuple[str, int]:
    parts = urlsplit(admin_uri)
    return parts.hostname or "localhost", parts.port or DEFAULT_PORT


def check_admin_uri(admin_uri: str) -> str | None:
    """What is wrong with the admin URI's form (never quoting it), or None."""
    parts = urlsplit(admin_uri)
    if parts.scheme not in SCHEMES:
        return f"the admin URI must start with mysql:// (MySQL and MariaDB), not {parts.scheme or '(no scheme)'}://"
    if not parts.hostname or not parts.username:
        return "the admin URI must name a user and a host: mysql://admin:password@host:3306/"
    return None


def uri(user: str, password: str, host: str, port: int, database: str) -> str:
    """What the server image reads: mysql:// (its entrypoint picks the PyMySQL driver)."""
    return f"mysql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{database}"


def _connect(admin_uri: str, timeout: int):
    import pymysql

    parts = urlsplit(admin_uri)
    return pymysql.connect(host=parts.hostname, port=parts.port or DEFAULT_PORT, user=unquote(parts.username or ""),
                           password=unquote(parts.password or ""), connect_timeout=timeout, read_timeout=30,
                           write_timeout=30, autocommit=True, charset="utf8mb4")


def _grant_pattern(database: str) -> str:
    # In a database-level GRANT, '_' and '%' are wildcards: escaped, the grant names this database only.
    return database.replace("_", r"\_")


def provision(admin_uri: str, user: str, databases: list[str], password: str, timeout: int = 10) -> None:
    """Creates the user (or sets its password: a new Secret means the old one is lost) and each
    database, on which it gets every privilege; it gets none elsewhere. Idempotent. The names are
    [a-z0-9_] only (identifier), so quoting them in backticks is safe."""
    conn = _connect(admin_uri, timeout)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (user, password))
            cur.execute("ALTER USER %s@'%%' IDENTIFIED BY %s", (user, password))
            for database in databases:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4")
                cur.execute(f"GRANT ALL PRIVILEGES ON `{_grant_pattern(database)}`.* TO %s@'%%'", (user,))
    finally:
        conn.close()


def drop(admin_uri: str, user: str, databases: list[str], timeout: int = 10) -> None:
    """Drops the databases and the user (retentionPolicy Delete). Idempotent."""
    conn = _connect(admin_uri, timeout)
    try:
        with conn.cursor() as cur:
            for database in databases:
                cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
    finally:
        conn.close()
