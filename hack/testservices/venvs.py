"""The virtualenvs the workload tests and the benchmark run: built once, cached by content hash.

- server venv: exactly what the image installs, by the image's own script (server-image/install.sh),
  at ``<cache>/venvs/server-<hash of requirements.lock, install.sh, python>-ep-<hash of the entrypoint
  sources>``: a hard-linked clone of the requirements venv with this entrypoint installed (seconds).
- client venv: the stock `mlflow` client with its declared dependencies (scikit-learn, pandas, ...),
  from hack/testservices/client-requirements.lock, at ``<cache>/venvs/client-<hash>``. It also
  provides plain `mlflow server` for the benchmark's stock side.

Run ``python -m testservices.venvs`` (with hack/ on sys.path) to build both ahead of time.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from localcluster.build import file_lock

from . import REPO, ServiceError, cache_dir

SERVER_IMAGE = REPO / "server-image"
CLIENT_LOCK = Path(__file__).with_name("client-requirements.lock")


@dataclass(frozen=True)
class Venv:
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    @property
    def site_packages(self) -> Path:
        return next((self.path / "lib").glob("python3*/site-packages"))


def base_python() -> str:
    """The interpreter venvs are made from: this machine's python3 (3.11), not a venv's shim."""
    exe = getattr(sys, "_base_executable", None) or sys.executable
    return exe


def _hash(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def _py_id() -> bytes:
    out = subprocess.run(
        [base_python(), "-c", "import sys, platform; print(sys.version, platform.machine())"],
        capture_output=True, text=True, check=True,
    ).stdout
    return out.encode()


def _tree_hash(root: Path) -> str:
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and "build" not in p.parts
        and not any(part.endswith(".egg-info") for part in p.parts)
    )
    return _hash(*(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() for f in files))


def _run(cmd: list[str], what: str, log: Path, env_extra: dict | None = None) -> float:
    import os

    env = dict(os.environ)
    env.update(env_extra or {})
    t0 = time.monotonic()
    with open(log, "ab") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise ServiceError(f"{what} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return time.monotonic() - t0


def _base_server_venv(key: str) -> Path:
    """The image's pinned requirements (and some entrypoint), installed once per requirements key."""
    path = cache_dir() / "venvs" / f"server-{key}"
    with file_lock(cache_dir() / "venvs" / f".server-{key}.lock"):
        if not (path / ".complete").exists():
            shutil.rmtree(path, ignore_errors=True)
            log = cache_dir() / "venvs" / f"server-{key}.log"
            secs = _run(["bash", str(SERVER_IMAGE / "install.sh"), str(path)], "server-image/install.sh", log,
                        {"PYTHON": base_python()})
            (path / ".install-seconds").write_text(f"{secs:.1f}\n")
            (path / ".complete").touch()
    return path


def _clone_venv(base: Path, path: Path) -> None:
    """A copy of ``base`` at ``path`` made of hard links (seconds, no space), with the scripts and
    activation files that name the venv's path rewritten (written anew, so base keeps its own)."""
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["cp", "-a", "--link", str(base), str(path)], check=True)
    for marker in [path / ".complete", *path.glob(".entrypoint-*")]:
        marker.unlink(missing_ok=True)
    old, new = str(base).encode(), str(path).encode()
    for script in (path / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        if old in data:
            mode = script.stat().st_mode
            script.unlink()  # breaks the hard link: base's file stays as it was
            script.write_bytes(data.replace(old, new))
            script.chmod(mode)


def server_venv() -> Venv:
    """The server venv for this checkout's entrypoint sources.

    Keyed by the requirements and by the entrypoint's content hash: checkouts with different
    entrypoint sources (worktrees, branches) get venvs of their own, so a test never runs another
    checkout's entrypoint (one shared venv re-installed in place let parallel checkouts test each
    other's code). Each is a hard-linked clone of the requirements venv plus its own entrypoint.
    """
    key = _hash((SERVER_IMAGE / "requirements.lock").read_bytes(), (SERVER_IMAGE / "install.sh").read_bytes(), _py_id())
    ep_hash = _tree_hash(SERVER_IMAGE / "entrypoint")
    path = cache_dir() / "venvs" / f"server-{key}-ep-{ep_hash}"
    with file_lock(cache_dir() / "venvs" / f".server-{key}-ep-{ep_hash}.lock"):
        if not (path / ".complete").exists():
            base = _base_server_venv(key)
            log = cache_dir() / "venvs" / f"server-{key}-ep-{ep_hash}.log"
            t0 = time.monotonic()
            _clone_venv(base, path)
            _run(["bash", str(SERVER_IMAGE / "install.sh"), "--entrypoint-only", str(path)],
                 "server-image/install.sh --entrypoint-only", log, {"PYTHON": base_python()})
            (path / ".install-seconds").write_text(f"{time.monotonic() - t0:.1f}\n")
            (path / ".complete").touch()
    _prune_entrypoint_clones(key, keep=path)
    return Venv(path)


CLONE_MAX_AGE_SECONDS = 3 * 86400


def _prune_entrypoint_clones(key: str, keep: Path) -> None:
    """Clones of other entrypoint versions unused for days go (a clone in use is touched on use)."""
    (keep / ".complete").touch()
    now = time.time()
    for clone in (cache_dir() / "venvs").glob(f"server-{key}-ep-*"):
        marker = clone / ".complete"
        if clone == keep or not marker.exists() or now - marker.stat().st_mtime < CLONE_MAX_AGE_SECONDS:
            continue
        with file_lock(cache_dir() / "venvs" / f".{clone.name}.lock"):
            shutil.rmtree(clone, ignore_errors=True)


def client_venv() -> Venv:
    key = _hash(CLIENT_LOCK.read_bytes(), _py_id())
    path = cache_dir() / "venvs" / f"client-{key}"
    venv = Venv(path)
    done = path / ".complete"
    with file_lock(cache_dir() / "venvs" / f".client-{key}.lock"):
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            log = cache_dir() / "venvs" / f"client-{key}.log"
            t0 = time.monotonic()
            _run([base_python(), "-m", "venv", str(path)], "python -m venv (client)", log)
            _run([str(venv.python), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                  "-r", str(CLIENT_LOCK)], "pip install client-requirements.lock", log)
            (path / ".install-seconds").write_text(f"{time.monotonic() - t0:.1f}\n")
            done.touch()
    return venv


def du(path: Path) -> int:
    """Bytes under path (what `du -sb` says), hard links counted once."""
    seen, total = set(), 0
    for p in path.rglob("*"):
        try:
            st = p.lstat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        total += st.st_size
    return total


if __name__ == "__main__":
    for fn in (server_venv, client_venv):
        v = fn()
        print(f"{fn.__name__}: {v.path} ({du(v.site_packages) / 1e6:.0f} MB site-packages)")
