"""Start ``mlflow-entrypoint`` (the server image's entrypoint) as a process on 127.0.0.1.

    proc = start_entrypoint(server_venv, {"MLFLOW_OPERATOR_BACKEND_STORE_URI": uri, ...}, tmp_path)
    proc.url  # http://127.0.0.1:<port>, /health answered 200
    proc.stop()

The environment is built from scratch (PATH, LANG, HOME and what the caller gives), like a pod's:
nothing from the test runner's environment leaks in. MLFLOW_OPERATOR_HOST/PORT/SCRATCH_DIR default to
127.0.0.1, a free port and ``<workdir>/scratch``.
"""
from __future__ import annotations

import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import ServiceError
from ._util import die_with_parent, disowned, free_port, owned, stop, tail
from .venvs import Venv


def base_env(venv: Venv, workdir: Path) -> dict[str, str]:
    return {
        "PATH": f"{venv.path / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(workdir),
        "PYTHONDONTWRITEBYTECODE": "1",  # as in the image
    }


@dataclass
class ServerProc:
    proc: subprocess.Popen
    port: int
    log: Path
    scratch: Path
    env: dict = field(repr=False, default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_healthy(self, timeout: float = 180) -> float:
        """Seconds until GET /health answered 200; ServiceError with the log if it exits or times out."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise ServiceError(f"mlflow-entrypoint exited with code {self.proc.returncode}" + tail(self.log, 40))
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.1)
        raise ServiceError(f"/health did not answer within {timeout:g}s" + tail(self.log, 40))

    def stop(self) -> None:
        stop(self.proc)
        disowned(self)


def _prepare(venv: Venv, env: dict[str, str], workdir: Path, port: int | None) -> tuple[dict, int, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(env.get("MLFLOW_OPERATOR_SCRATCH_DIR") or workdir / "scratch")
    scratch.mkdir(parents=True, exist_ok=True)
    port = port or int(env.get("MLFLOW_OPERATOR_PORT") or free_port())
    full = base_env(venv, workdir)
    full.update({"MLFLOW_OPERATOR_HOST": "127.0.0.1", "MLFLOW_OPERATOR_PORT": str(port), "MLFLOW_OPERATOR_SCRATCH_DIR": str(scratch)})
    full.update({k: v for k, v in env.items() if v is not None})
    return full, port, scratch


def start_entrypoint(
    venv: Venv, env: dict[str, str], workdir: Path, *, port: int | None = None, wait: bool = True,
    timeout: float = 180, name: str = "server",
) -> ServerProc:
    """``mlflow-entrypoint serve`` as a process (its own session: stop() ends the whole tree)."""
    full, port, scratch = _prepare(venv, env, workdir, port)
    log = workdir / f"{name}-{port}.log"
    fh = open(log, "ab")
    proc = subprocess.Popen(
        [str(venv.bin("mlflow-entrypoint")), "serve"], env=full, cwd="/", stdout=fh, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=die_with_parent(),
    )
    fh.close()
    sp = owned(ServerProc(proc, port, log, scratch, full))
    if wait:
        try:
            sp.wait_healthy(timeout)
        except ServiceError:
            sp.stop()
            raise
    return sp


def run_entrypoint(
    venv: Venv, subcommand: str, env: dict[str, str], workdir: Path, timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run ``mlflow-entrypoint <subcommand>`` to completion (migrate, check, wait-for-backend, serve that refuses)."""
    full, _, _ = _prepare(venv, env, workdir, None)
    return subprocess.run(
        [str(venv.bin("mlflow-entrypoint")), subcommand], env=full, cwd="/", capture_output=True, text=True,
        timeout=timeout,
    )
