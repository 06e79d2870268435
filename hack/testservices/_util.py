from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from . import ServiceError

# -- the services die with the process that started them
# A service runs in a session of its own (start_new_session), so a signal to the test process's group
# does not reach it. Two guards stop it with its owner instead:
# * owned(): at exit and on SIGTERM/SIGHUP, every service still running is stopped (its data
#   directory removed), then the signal does what it did before (the previous handler, or the
#   default: the process ends by that signal);
# * die_with_parent(): the kernel signals the service when its owner dies, even by SIGKILL (no
#   handler runs then, so the data directory stays). PR_SET_PDEATHSIG follows the *thread* that
#   started the child: start services from the main thread (pytest's fixtures are).
_OWNED: dict[int, object] = {}
_PREVIOUS: dict[int, object] = {}
_GUARDED = False
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM):
    """A preexec_fn: ``sig`` to the child when its parent dies (runs after a user= demotion, which
    would otherwise clear it)."""
    def preexec() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        except Exception:  # not Linux: the atexit/signal guard still stops it
            pass
    return preexec


def stop_owned() -> None:
    for service in reversed(list(_OWNED.values())):
        with contextlib.suppress(Exception):  # keep stopping the others
            service.stop()


def _on_signal(signum: int, frame) -> None:
    stop_owned()
    previous = _PREVIOUS.get(signum)
    if callable(previous):
        previous(signum, frame)
    else:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def owned(service):
    """Registers a started service (anything with stop()) to be stopped with this process; its
    stop() calls disowned(). Returns the service."""
    global _GUARDED
    if not _GUARDED:
        _GUARDED = True
        atexit.register(stop_owned)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                previous = signal.getsignal(sig)
                if previous is not signal.SIG_IGN:  # a process told to ignore it keeps doing so
                    _PREVIOUS[sig] = previous
                    signal.signal(sig, _on_signal)
    _OWNED[id(service)] = service
    return service


def disowned(service) -> None:
    _OWNED.pop(id(service), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "service", log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what} exited with code {proc.returncode} before listening" + tail(log))
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise ServiceError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:g}s" + tail(log))


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (those still alive), parents first."""
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop(0)
        out.append(p)
        try:
            frontier.extend(int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split())
        except OSError:
            pass
    return out


def tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n--- last lines of " + str(log) + ":\n" + "\n".join(text)


def stop(proc: subprocess.Popen | None, timeout: float = 15) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(5)


@contextlib.contextmanager
def silent_listener():
    """A TCP port on 127.0.0.1 that accepts connections and never sends a byte: a database host
    that hangs. Yields (port, accepted) where accepted lists the connections taken so far, so a
    test can check its client really connected."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept():
        while not done.is_set():
            try:
                accepted.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1], accepted
    finally:
        done.set()
        t.join(5)
        for c in accepted:
            c.close()
        srv.close()
