"""A real MariaDB (Debian's mariadb-server: /usr/sbin/mariadbd) on 127.0.0.1 with a password user.

mariadb-install-db + mariadbd in a temp dir, with no option file read (``--no-defaults``: Debian's
/etc/mysql config and its /run/mysqld socket play no part). TCP on 127.0.0.1 and a free port only; the
socket lives in the temp dir. mariadbd refuses to run as root (unless told ``--user=root``); when we are
root the server runs as the unprivileged ``nobody`` user instead, as PostgreSQL does in postgres.py.
Durability is traded for speed (no doublewrite, no flush per commit): test data only.

The character set is utf8mb4 (Debian's mariadb-server and MySQL 8 default to it; bare mariadbd to latin1).
Queries from the tests go through Debian's ``mariadb`` client (installed with the server) with the
credentials in a 0600 option file, so the test runner needs no MySQL driver; rows come back as tuples of
strings.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from . import ServiceError
from ._util import die_with_parent, disowned, free_port, owned as owned_by_us, stop, tail, wait_port
from .postgres import _demote

MARIADBD = Path("/usr/sbin/mariadbd")
INSTALL_DB = Path("/usr/bin/mariadb-install-db")
CLIENT = Path("/usr/bin/mariadb")


def mariadb_bins() -> tuple[Path, Path, Path]:
    missing = [str(p) for p in (MARIADBD, INSTALL_DB, CLIENT) if not os.access(p, os.X_OK)]
    if missing:
        raise ServiceError(
            f"MariaDB is not installed: {', '.join(missing)} missing. "
            "Run hack/system-deps (apt-get install mariadb-server)."
        )
    return MARIADBD, INSTALL_DB, CLIENT


class MySQL:
    def __init__(self, user: str = "mlflow", password: str | None = None):
        self.user = user
        # token_urlsafe: letters, digits, '-' and '_' only, so it needs no quoting inside SQL
        self.password = password or "my-" + secrets.token_urlsafe(18)
        self.port = free_port()
        self.host = "127.0.0.1"
        self.dir = Path(tempfile.mkdtemp(prefix="mlflow-op-mysql-"))
        self.data = self.dir / "data"
        self.socket = self.dir / "mysqld.sock"
        self.log = self.dir / "mariadb.log"
        self.client_cnf = self.dir / "client.cnf"
        self.proc: subprocess.Popen | None = None
        self.version = ""

    def start(self) -> "MySQL":
        """Initialise the data directory, start mariadbd, wait for a login; on failure nothing is left."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        mariadbd, install_db, _ = mariadb_bins()
        demote = _demote()
        owned = [self.dir]
        self.dir.chmod(0o700)
        (self.dir / "tmp").mkdir()
        owned.append(self.dir / "tmp")
        users = self.dir / "users.sql"
        users.write_text(
            f"CREATE USER IF NOT EXISTS '{self.user}'@'127.0.0.1' IDENTIFIED BY '{self.password}';\n"
            f"GRANT ALL PRIVILEGES ON *.* TO '{self.user}'@'127.0.0.1' WITH GRANT OPTION;\n"
        )
        owned.append(users)
        if demote:
            for path in owned:
                os.chown(path, demote["user"], demote["group"])
        init = subprocess.run(
            [str(install_db), "--no-defaults", f"--datadir={self.data}", "--basedir=/usr", "--skip-test-db",
             "--skip-name-resolve", "--auth-root-authentication-method=socket", f"--tmpdir={self.dir / 'tmp'}"],
            capture_output=True, text=True, **demote,
        )
        if init.returncode != 0:
            raise ServiceError(f"mariadb-install-db failed: {(init.stderr.strip() or init.stdout.strip())[-3000:]}")
        self.client_cnf.write_text(
            f"[client]\nuser={self.user}\npassword={self.password}\nhost={self.host}\nport={self.port}\n"
            "protocol=TCP\n"
        )
        self.client_cnf.chmod(0o600)
        logfh = open(self.log, "ab")
        if demote:
            os.chown(self.log, demote["user"], demote["group"])
        self.proc = subprocess.Popen(
            [str(mariadbd), "--no-defaults", f"--datadir={self.data}", "--basedir=/usr",
             f"--port={self.port}", f"--bind-address={self.host}", f"--socket={self.socket}",
             f"--pid-file={self.dir / 'mariadbd.pid'}", f"--tmpdir={self.dir / 'tmp'}", "--skip-name-resolve",
             "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
             "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0", "--innodb-buffer-pool-size=64M",
             "--max-connections=400", "--skip-log-bin",
             # the password user, created at start-up (the bootstrap of mariadb-install-db runs without
             # grant tables, so CREATE USER is refused there); the file is deleted once logins work
             f"--init-file={users}"],
            stdout=logfh, stderr=subprocess.STDOUT, start_new_session=True, **demote,
            preexec_fn=die_with_parent(),
        )
        owned_by_us(self)
        logfh.close()
        try:
            wait_port(self.port, 60, self.proc, "mariadbd", self.log)
            # accepting TCP is not yet accepting logins: wait until a query works
            deadline = time.monotonic() + 30
            while True:
                res = self._client("SELECT VERSION()", check=False)
                if res.returncode == 0:
                    self.version = res.stdout.strip()
                    break
                if time.monotonic() > deadline:
                    raise ServiceError(f"mariadbd on port {self.port} refuses logins: {res.stderr.strip()}"
                                       + tail(self.log))
                time.sleep(0.2)
        finally:
            users.unlink(missing_ok=True)

    def _client(self, sql: str, dbname: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        _, _, client = mariadb_bins()
        argv = [str(client), f"--defaults-file={self.client_cnf}", "--batch", "--skip-column-names", "--raw",
                "--connect-timeout=5", "-e", sql]
        if dbname:
            argv.append(dbname)
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise ServiceError(f"mariadb client failed on {sql!r}: {res.stderr.strip()}")
        return res

    def uri(self, dbname: str) -> str:
        """The URI as a user writes it (``mysql://``, no driver): the entrypoint picks the driver."""
        return f"mysql://{quote(self.user)}:{quote(self.password, safe='')}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """A fresh, empty database; returns its URI."""
        name = name or "db_" + uuid.uuid4().hex[:12]
        self._client(f"CREATE DATABASE `{name}`")
        return self.uri(name)

    def query(self, dbname: str, sql: str) -> list[tuple[str, ...]]:
        """Rows as tuples of strings (the client's tab-separated output); [] for a statement without rows."""
        out = self._client(sql, dbname).stdout
        return [tuple(line.split("\t")) for line in out.splitlines()]

    def stop(self) -> None:
        """SIGTERM (mariadbd shuts down cleanly on it), SIGKILL only if it does not end in time."""
        stop(self.proc, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)
        disowned(self)
