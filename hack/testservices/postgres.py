"""A real PostgreSQL (Debian's /usr/lib/postgresql/<v>/bin) on 127.0.0.1 with password auth.

initdb + postgres in a temp dir; when running as root (PostgreSQL refuses to), the server runs as
the unprivileged ``nobody`` user. Durability is traded for speed (fsync off): test data only.
"""
from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

from . import ServiceError
from ._util import die_with_parent, disowned, free_port, owned, stop, tail, wait_port

RUN_AS = "nobody"


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise ServiceError(
            "PostgreSQL is not installed: /usr/lib/postgresql/*/bin/postgres is missing. "
            "Run hack/system-deps (apt-get install postgresql)."
        )
    return Path(found[-1]).parent


def _demote() -> dict:
    """subprocess kwargs that run a child as RUN_AS when we are root."""
    if os.geteuid() != 0:
        return {}
    import pwd

    pw = pwd.getpwnam(RUN_AS)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


class Postgres:
    def __init__(self, user: str = "mlflow", password: str | None = None):
        self.user = user
        self.password = password or "pg-" + secrets.token_urlsafe(18)
        self.port = free_port()
        self.host = "127.0.0.1"
        self.dir = Path(tempfile.mkdtemp(prefix="mlflow-op-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Postgres":
        bindir = pg_bin()
        demote = _demote()
        if demote:
            os.chown(self.dir, demote["user"], demote["group"])
        self.dir.chmod(0o700)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if demote:
            os.chown(pwfile, demote["user"], demote["group"])
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, **demote,
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise ServiceError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        logfh = open(self.log, "ab")
        if demote:
            os.chown(self.log, demote["user"], demote["group"])
        self.proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(self.data), "-h", self.host, "-p", str(self.port),
             "-k", str(self.dir), "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=400", "-c", "shared_buffers=64MB"],
            stdout=logfh, stderr=subprocess.STDOUT, start_new_session=True, **demote,
            preexec_fn=die_with_parent(signal.SIGINT),  # SIGINT: PostgreSQL's fast shutdown
        )
        owned(self)
        wait_port(self.port, 30, self.proc, "postgres", self.log)
        # accepting TCP is not yet accepting logins: wait until a query works
        import time

        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg2.connect(**self.connect_kwargs("postgres"), connect_timeout=3).close()
                break
            except psycopg2.OperationalError as e:
                if time.monotonic() > deadline:
                    raise ServiceError(f"postgres on port {self.port} refuses logins: {e}" + tail(self.log)) from None
                time.sleep(0.2)
        return self

    def connect_kwargs(self, dbname: str) -> dict:
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password, "dbname": dbname}

    def uri(self, dbname: str) -> str:
        """The URI as a user writes it (``postgresql://``, no driver): the entrypoint picks the driver."""
        return f"postgresql://{quote(self.user)}:{quote(self.password, safe='')}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """A fresh database (empty, or a copy of ``template``: instant); returns its URI."""
        import psycopg2

        name = name or "db_" + uuid.uuid4().hex[:12]
        conn = psycopg2.connect(**self.connect_kwargs("postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        conn.close()
        return self.uri(name)

    def query(self, dbname: str, sql: str, *params):
        import psycopg2

        conn = psycopg2.connect(**self.connect_kwargs(dbname))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params or None)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def stop(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
        disowned(self)
