"""Network namespaces from Python 3.11 (no os.setns): setns(2) through ctypes.

setns(CLONE_NEWNET) changes the namespace of the calling *thread* only, and a socket stays in
the namespace it was created in. So `call_in(ns, fn)` runs fn in a fresh thread that joins the
namespace first and ends afterwards: the test process's other threads never move.
"""
from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Callable, TypeVar

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def setns(path: str | Path, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace at `path` (e.g. /proc/<pid>/ns/net)."""
    fd = os.open(str(path), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, nstype) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def inode(path: str | Path) -> int:
    """The namespace's identity (two paths name the same namespace iff their inodes match)."""
    return os.stat(path).st_ino


def call_in(path: str | Path, fn: Callable[[], T], timeout: float = 60) -> T:
    """Run fn() in a thread inside the network namespace `path`; return its result or raise its
    exception."""
    box: dict = {}

    def run() -> None:
        try:
            setns(path)
            box["value"] = fn()
        except BaseException as exc:  # handed back to the caller
            box["error"] = exc

    t = threading.Thread(target=run, name="netns-call", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"call inside network namespace {path} did not finish within {timeout:.0f}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def processes_in(ns_inode: int, kind: str = "net") -> list[int]:
    """Pids whose `kind` namespace (net, mnt) has this inode: what a namespace still holds."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / kind).st_ino == ns_inode:
                out.append(int(entry.name))
        except OSError:
            continue
    return out
