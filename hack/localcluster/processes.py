"""Child processes of the control plane: each in its own session (so its whole process group can
be signalled and nothing is orphaned), its output in a log file, stopped TERM-then-KILL."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when the starting process dies, even by
    SIGKILL, so a killed pytest leaves nothing running."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:  # not Linux: atexit/signal handlers still stop the cluster
        pass


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the kernel's pick; the caller binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


@dataclass
class Process:
    name: str
    pid: int
    log: Path
    exe: str
    popen: subprocess.Popen | None = field(default=None, repr=False)

    @classmethod
    def start(cls, name: str, argv: list[str], log: Path, *, die_with_parent: bool, env: dict | None = None,
              exe: str | None = None) -> "Process":
        """exe: the program the pid runs once started, when argv[0] execs it (nsenter ... -- prog);
        it guards signals against pid reuse."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
                env=env,
                cwd=log.parent,
            )
        return cls(name=name, pid=popen.pid, log=log, exe=exe or argv[0], popen=popen)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_runs(self.pid, self.exe)

    def exit_code(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def signal_group(self, sig: int) -> None:
        """Signal the process group (the process and anything it spawned)."""
        if self.popen is None and not _pid_runs(self.pid, self.exe):
            return  # never signal a pid that now belongs to something else
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def to_state(self) -> dict:
        return {"name": self.name, "pid": self.pid, "log": str(self.log), "exe": self.exe}

    @classmethod
    def from_state(cls, data: dict) -> "Process":
        return cls(name=data["name"], pid=int(data["pid"]), log=Path(data["log"]), exe=data["exe"])


def _pid_runs(pid: int, exe: str) -> bool:
    """True if pid is alive, not a zombie, and still runs `exe` (guards against pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmd0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except (OSError, IndexError):
        return False
    return cmd0 == exe or os.path.basename(cmd0) == os.path.basename(exe)


def group_members(pgid: int) -> list[int]:
    """Pids whose process group is pgid (to prove nothing is left)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def stop_all(processes: list[Process], timeout: float = 10.0) -> list[str]:
    """Stop in tiers: every process but kube-apiserver and etcd first (its clients), then
    kube-apiserver, then etcd, so nothing hangs waiting for a backend already gone. Each tier:
    SIGTERM the process groups, wait up to `timeout`, SIGKILL what is left.
    Returns the names that needed SIGKILL."""
    last = ("kube-apiserver", "etcd")
    tiers = [[p for p in processes if p.name not in last]] + [[p for p in processes if p.name == n] for n in last]
    killed: list[str] = []
    for tier in tiers:
        if tier:
            killed += _stop_tier(tier, timeout)
    return killed


def _stop_tier(processes: list[Process], timeout: float) -> list[str]:
    for p in processes:
        p.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = []
    for p in processes:
        while time.monotonic() < deadline and (p.alive() or group_members(p.pid)):
            time.sleep(0.05)
        if p.alive() or group_members(p.pid):
            killed.append(p.name)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for p in processes:
        if p.popen is not None:
            try:
                p.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        end = time.monotonic() + 5
        while time.monotonic() < end and group_members(p.pid):
            time.sleep(0.05)
    return killed
