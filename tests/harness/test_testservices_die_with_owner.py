"""Self-tests of hack/testservices (a test of the harness, not of the product): PostgreSQL, MariaDB,
MinIO, Azurite and fake-gcs-server stop with the process that started them. SIGTERMed, the owner stops each one
and removes its data directory before it ends by that signal; SIGKILLed (no handler runs), the
kernel still ends them (PR_SET_PDEATHSIG). Nothing of theirs keeps running either way."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.workload  # real services, no cluster: `make test-workload` runs it too

REPO = Path(__file__).resolve().parents[2]

OWNER = """
import json, sys, time
from testservices.azurite import Azurite
from testservices.gcs import FakeGCSServer
from testservices.mysql import MySQL
from testservices.postgres import Postgres
from testservices.s3 import S3Server
services = {"postgres": Postgres(), "mariadb": MySQL(), "minio": S3Server(), "azurite": Azurite(),
            "fake-gcs-server": FakeGCSServer()}
for service in services.values():
    service.start()
print(json.dumps({name: {"pid": s.proc.pid, "dir": str(s.dir)} for name, s in services.items()}), flush=True)
time.sleep(600)
"""


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time): tells a process from a later one with its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    state = None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and _start_time(pid) == started


def _owner() -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(OWNER)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO / "hack")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail(f"the owner process started no services: {proc.stderr.read()[-3000:]}", pytrace=False)
    services = json.loads(line)
    for service in services.values():
        service["started"] = _start_time(service["pid"])
        assert _alive(service["pid"], service["started"]), service
    return proc, services


def _session(sid: int) -> list[int]:
    """Live processes of the session a service leads (start_new_session): PostgreSQL's backends too."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[3]) == sid:
                out.append(int(entry.name))
    return out


def _wait_gone(services: dict, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = {n: s["pid"] for n, s in services.items() if _alive(s["pid"], s["started"])}
        left.update({f"{n} session": members for n, s in services.items() if (members := _session(s["pid"]))})
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_a_sigtermed_owner_stops_its_services_and_removes_their_data():
    proc, services = _owner()
    proc.send_signal(signal.SIGTERM)
    proc.wait(90)
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, proc.stderr.read()[-3000:])
    # Stopped by the owner before it ended: already gone, data directories removed.
    assert _wait_gone(services, 2) == {}
    assert [s["dir"] for s in services.values() if Path(s["dir"]).exists()] == []


def test_a_sigkilled_owner_leaves_no_service_running():
    proc, services = _owner()
    try:
        proc.kill()
        proc.wait(30)
        assert _wait_gone(services, 60) == {}
    finally:
        for s in services.values():  # no handler ran: the data directories are left, by design
            if _alive(s["pid"], s["started"]):
                os.kill(s["pid"], signal.SIGKILL)
            shutil.rmtree(s["dir"], ignore_errors=True)
