"""Databases: URI normalization, bounded connection attempts, schema revisions, locked migrations.

The schema revision logic reads MLflow's own alembic scripts (the ones `mlflow db upgrade` runs), so
"the image's head" is always the head of the MLflow version installed next to this package.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import sqlalchemy
from sqlalchemy.pool import NullPool

log = logging.getLogger("mlflow_entrypoint")

CONNECT_TIMEOUT_SECONDS = 10
LOCK_WAIT_SECONDS = 900


class BackendError(Exception):
    """A database problem with a message that names the host and never the password."""


# ---------------------------------------------------------------------------------------- URIs
def normalize_uri(uri: str) -> str:
    """The URI as SQLAlchemy must see it with the drivers the image has.

    - ``postgresql://`` (and ``postgres://``) -> ``postgresql+psycopg2://``: SQLAlchemy 2.1 defaults
      to psycopg 3, which the image does not carry; psycopg2-binary is the one PostgreSQL driver.
    - ``mysql://`` -> ``mysql+pymysql://`` (SQLAlchemy's default would be mysqlclient, a C build).
    - a ``connect_timeout`` is added when absent, so that a host that accepts TCP and never answers
      cannot hang the server (or these commands) forever.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme
    if not scheme.startswith(("postgres", "mysql")):
        return uri  # sqlite:////abs/path and file:///dir pass unchanged (urlunsplit would drop a slash)
    if scheme in ("postgresql", "postgres"):
        scheme = "postgresql+psycopg2"
    elif scheme == "mysql":
        scheme = "mysql+pymysql"
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme.startswith(("postgresql", "mysql")) and "connect_timeout" not in query:
        query["connect_timeout"] = str(CONNECT_TIMEOUT_SECONDS)
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def describe(uri: str) -> str:
    """``dialect host:port/db`` (or the SQLite path): what a message may say about a database."""
    parts = urlsplit(uri)
    dialect = parts.scheme.split("+")[0]
    if dialect == "sqlite":
        return f"sqlite {uri[len('sqlite:///'):]}"
    port = f":{parts.port}" if parts.port else ""
    return f"{dialect} {parts.hostname}{port}{parts.path}"


def dialect_of(uri: str) -> str:
    dialect = urlsplit(uri).scheme.split("+")[0]
    return "postgresql" if dialect == "postgres" else dialect


def make_engine(uri: str, connect_timeout: float | None = None, read_timeout: float | None = None) -> sqlalchemy.engine.Engine:
    """An engine without a pool (these commands connect a few times, then exit).

    PyMySQL's connect_timeout bounds only the TCP connect: the handshake that follows waits for the
    server's greeting without limit, so a MySQL host that accepts connections and never answers
    hangs the client unless reads are bounded too (``read_timeout``; libpq's connect_timeout already
    covers PostgreSQL's whole start-up). Only short statements get it: a migration's ALTER TABLE
    may rightly take longer than any such bound.
    """
    url = normalize_uri(uri)
    connect_args = {}
    dialect = dialect_of(uri)
    if connect_timeout is not None and dialect in ("postgresql", "mysql"):
        connect_args["connect_timeout"] = max(1, int(connect_timeout))
    if read_timeout is not None and dialect == "mysql":
        connect_args["read_timeout"] = connect_args["write_timeout"] = max(1, int(read_timeout))
    return sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)


def _reason(exc: BaseException) -> str:
    """The first line of a driver error, without the SQL or the URL."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if dialect_of(uri) == "sqlite" else None


def ping(uri: str, connect_timeout: float) -> None:
    """One bounded connection attempt plus ``SELECT 1``; raises BackendError naming the host.

    SQLite: the volume (the database file's directory) must exist; the file itself is not created.
    """
    path = sqlite_path(uri)
    if path is not None:
        if not path.parent.is_dir():
            raise BackendError(f"{describe(uri)}: directory {path.parent} does not exist (volume not mounted?)")
        return
    engine = make_engine(uri, connect_timeout, read_timeout=connect_timeout)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except Exception as e:  # driver errors of every kind
        raise BackendError(f"{describe(uri)}: {_reason(e)}") from None
    finally:
        engine.dispose()


def wait_for(uri: str, bound_seconds: float, attempt_timeout: float = 5.0) -> int:
    """Retry :func:`ping` with exponential backoff until it succeeds or ``bound_seconds`` pass.

    Returns the number of attempts. Each attempt is itself bounded (``attempt_timeout``), so the
    whole wait ends within about ``bound_seconds + attempt_timeout`` even if the host accepts TCP
    connections and never answers.
    """
    deadline = time.monotonic() + bound_seconds
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            ping(uri, connect_timeout=min(attempt_timeout, max(1.0, remaining)))
            return attempt
        except BackendError as e:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(
                    f"database {describe(uri)} did not answer within {bound_seconds:g}s "
                    f"({attempt} attempts); last error: {str(e).split(': ', 1)[-1]}"
                ) from None
            log.info("waiting for database %s (attempt %d): %s", describe(uri), attempt, str(e).split(": ", 1)[-1])
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)


# ----------------------------------------------------------------------------------- revisions
def _mlflow_dir() -> Path:
    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError("MLflow is not installed next to the entrypoint")
    return Path(list(spec.submodule_search_locations)[0])


@dataclass(frozen=True)
class SchemaKind:
    name: str
    script_dir: str  # relative to the mlflow package
    version_table: str
    marker_table: str  # a table that exists once the schema was created

    def scripts(self):
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(_mlflow_dir() / self.script_dir))
        return ScriptDirectory.from_config(cfg)


TRACKING = SchemaKind("tracking", "store/db_migrations", "alembic_version", "experiments")
AUTH = SchemaKind("auth", "server/auth/db/migrations", "alembic_version_auth", "users")


def kind_for(name: str) -> SchemaKind:
    return AUTH if name == "auth" else TRACKING


@dataclass
class SchemaStatus:
    kind: str
    state: str  # current | empty | behind | newer | unversioned
    current: str | None
    head: str

    @property
    def ok(self) -> bool:
        return self.state == "current"

    def explain(self, where: str) -> str:
        if self.state == "current":
            return f"{self.kind} database {where} is at the image's schema revision {self.head}"
        if self.state == "empty":
            return (
                f"{self.kind} database {where} has no MLflow schema yet (image head {self.head}); "
                "run `mlflow-entrypoint migrate` (the operator's migration Job) first"
            )
        if self.state == "behind":
            return (
                f"{self.kind} database {where} is at schema revision {self.current}, the image expects "
                f"{self.head}; run `mlflow-entrypoint migrate` (the operator's migration Job) first"
            )
        if self.state == "newer":
            return (
                f"{self.kind} database {where} is at schema revision {self.current}, which this image "
                f"(head {self.head}) does not know: it was migrated by a newer MLflow; use that image "
                "or restore a backup (downgrades are refused)"
            )
        return (
            f"{self.kind} database {where} has MLflow tables but no {kind_for(self.kind).version_table} "
            "revision; it was not created by `mlflow db upgrade`"
        )


def schema_status(engine: sqlalchemy.engine.Engine, kind: SchemaKind) -> SchemaStatus:
    from alembic.migration import MigrationContext

    scripts = kind.scripts()
    head = scripts.get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn, opts={"version_table": kind.version_table}).get_current_revision()
        tables = set(sqlalchemy.inspect(conn).get_table_names())
    if current is None:
        state = "unversioned" if kind.marker_table in tables else "empty"
        if kind is AUTH and state == "unversioned":
            state = "behind"  # pre-3.6 auth DB: MLflow's auth migration stamps and upgrades it
    elif current == head:
        state = "current"
    else:
        try:
            known = scripts.get_revision(current) is not None
        except Exception:
            known = False
        state = "behind" if known else "newer"
    return SchemaStatus(kind.name, state, current, head)


def status_of(uri: str, kind_name: str, connect_timeout: float = CONNECT_TIMEOUT_SECONDS) -> SchemaStatus:
    path = sqlite_path(uri)
    if path is not None and not path.exists():  # do not create the file by looking at it
        return SchemaStatus(kind_name, "empty", None, kind_for(kind_name).scripts().get_current_head())
    engine = make_engine(uri, connect_timeout)
    try:
        return schema_status(engine, kind_for(kind_name))
    except BackendError:
        raise
    except Exception as e:
        raise BackendError(f"{describe(uri)}: {_reason(e)}") from None
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------- locking
def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"mlflow-operator-migrate:{name}".encode()).digest()[:8], "big", signed=True)


def mysql_lock_name(database: str, kind: str) -> str:
    """The GET_LOCK name of one database's migration.

    MySQL's named locks are server-wide, and one server often holds the databases of several teams:
    the name carries the database, so their migrations do not wait for each other (PostgreSQL's
    advisory locks are per database already). Lock names are limited to 64 characters, so the
    database name is hashed.
    """
    return f"mlflow-operator-migrate-{kind}-{hashlib.sha256(database.encode()).hexdigest()[:24]}"


@contextlib.contextmanager
def migration_lock(engine: sqlalchemy.engine.Engine, uri: str, name: str, wait_seconds: float = LOCK_WAIT_SECONDS):
    """A database-level lock held for the whole migration, so two migrations never run at once.

    PostgreSQL: a session advisory lock; MySQL: GET_LOCK (named per database, :func:`mysql_lock_name`);
    SQLite: an flock on ``<db>.migrate.lock``.
    """
    dialect = engine.dialect.name
    deadline = time.monotonic() + wait_seconds
    announced = False

    def waiting():
        nonlocal announced
        if time.monotonic() > deadline:
            raise BackendError(f"another migration of {describe(uri)} held the lock for over {wait_seconds:g}s")
        if not announced:
            log.info("another migration of %s is running; waiting for its lock", describe(uri))
            announced = True
        time.sleep(0.5)

    if dialect == "sqlite":
        path = Path(engine.url.database or "").with_suffix(".migrate.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waiting()
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return

    conn = engine.connect()
    try:
        if dialect == "postgresql":
            key = _lock_key(name)
            while not conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                conn.commit()
                waiting()
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        elif dialect == "mysql":
            lock_name = mysql_lock_name(engine.url.database or "", name)
            while conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, 1)"), {"n": lock_name}).scalar() != 1:
                waiting()
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": lock_name})
        else:
            raise BackendError(f"no migration lock for database dialect {dialect}")
    finally:
        conn.close()


# ------------------------------------------------------------------------------------ migrating
# MLflow's first auth migration (8606fa83a998) names the foreign keys of experiment_permissions and of
# registered_model_permissions both `fk_user_id`. MySQL and MariaDB scope constraint names to the
# database, so the second CREATE TABLE fails (errno 121, "Duplicate key on write or update";
# mlflow/mlflow#9642 and #10964, open): stock MLflow cannot create a basic-auth database on MySQL. The
# image gives the second one its own name as the table is created. No later auth migration refers to
# either name.
MYSQL_FOREIGN_KEY_RENAMES = {("registered_model_permissions", "fk_user_id"): "fk_registered_model_perm_user_id"}


@contextlib.contextmanager
def _unique_foreign_key_names(engine: sqlalchemy.engine.Engine):
    """While MLflow's migrations create tables on MySQL, rename the clashing foreign keys above."""
    if engine.dialect.name != "mysql":
        yield
        return

    def before_create(table, connection, **kw):
        for constraint in table.constraints:
            if isinstance(constraint, sqlalchemy.ForeignKeyConstraint):
                new = MYSQL_FOREIGN_KEY_RENAMES.get((table.name, constraint.name))
                if new:
                    log.info("naming foreign key %s.%s %s (MySQL needs unique names)", table.name, constraint.name, new)
                    constraint.name = new

    sqlalchemy.event.listen(sqlalchemy.Table, "before_create", before_create)
    try:
        yield
    finally:
        sqlalchemy.event.remove(sqlalchemy.Table, "before_create", before_create)


def _apply(engine: sqlalchemy.engine.Engine, kind: SchemaKind, status: SchemaStatus) -> None:
    """What `mlflow db upgrade` (tracking) and the auth app's start-up migration (auth) do."""
    if kind is AUTH:
        from mlflow.server.auth.db import utils as auth_db_utils

        with _unique_foreign_key_names(engine):
            auth_db_utils.migrate(engine, "head")
        return
    from mlflow.store.db import utils as db_utils

    if status.state == "empty":
        db_utils._initialize_tables(engine)
    else:
        db_utils._upgrade_db(engine)


def migrate(uri: str, kind_name: str) -> tuple[SchemaStatus, SchemaStatus]:
    """Upgrade one database to the image's head under the migration lock. Returns (before, after)."""
    kind = kind_for(kind_name)
    engine = make_engine(uri, CONNECT_TIMEOUT_SECONDS)
    try:
        with migration_lock(engine, uri, kind.name):
            before = schema_status(engine, kind)
            if before.state == "newer":
                raise BackendError(before.explain(describe(uri)))
            if before.state == "unversioned":
                raise BackendError(before.explain(describe(uri)))
            if before.state != "current":
                log.info(
                    "migrating %s database %s from %s to %s",
                    kind.name, describe(uri), before.current or "an empty schema", before.head,
                )
                _apply(engine, kind, before)
            after = schema_status(engine, kind)
        if not after.ok:
            raise BackendError(f"migration ended at {after.current}, expected {after.head}")
        return before, after
    finally:
        engine.dispose()
