"""Run a built image in a real container with runc, without a node (image tests, `make images`).

The container gets what the operator's pods get: the image's user, ENTRYPOINT and CMD, a
read-only root filesystem, no capabilities, no new privileges, its own network namespace
(loopback only: nothing leaves it) and writable /tmp (tmpfs) and optionally /data (a host
directory, like the PVC). The root filesystem is the image as buildah unpacks it from the
OCI archive; runc is the runtime containerd uses on the node.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .build import RUNC, Image

RUN_AS = 10001
CGROUP_PARENT = "mlflow-operator-images"


def _remove_cgroup_parent() -> None:
    """runc removes each container's cgroup; the shared parent goes once it is empty."""
    for parent in Path("/sys/fs/cgroup").glob(f"*/{CGROUP_PARENT}"):
        try:
            parent.rmdir()
        except OSError:
            pass  # another container of these tests still runs
    try:
        Path("/sys/fs/cgroup", CGROUP_PARENT).rmdir()  # a pure cgroup v2 host
    except OSError:
        pass


class ContainerError(RuntimeError):
    pass


def _buildah(*args: str) -> str:
    done = subprocess.run(["buildah", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise ContainerError(f"buildah {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def image_config(image: Image) -> dict:
    """The OCI image config (User, Entrypoint, Cmd, Env, WorkingDir) read from the archive."""
    cid = _buildah("from", "--quiet", f"oci-archive:{image.archive}")
    try:
        return json.loads(_buildah("inspect", "--type", "container", cid))["OCIv1"]["config"]
    finally:
        _buildah("rm", cid)


class Container:
    """``with Container(image, ...) as c:`` starts it; ``c.exec([...])`` runs a command inside."""

    def __init__(self, image: Image, args: list[str] | None = None, env: dict[str, str] | None = None,
                 data_dir: Path | None = None, ro_mounts: dict[str, Path] | None = None,
                 command: list[str] | None = None):
        self.image = image
        # As in a pod: `command` replaces the ENTRYPOINT, `args` the CMD.
        self.command = command
        self.args = args
        self.env = env or {}
        self.data_dir = data_dir
        self.ro_mounts = ro_mounts or {}
        self.id = f"mlflow-operator-test-{secrets.token_hex(4)}"
        self._tmp = Path(tempfile.mkdtemp(prefix="mlflow-operator-ctr-"))
        self._cid: str | None = None
        self._proc: subprocess.Popen | None = None
        self.config: dict = {}

    @property
    def log_path(self) -> Path:
        return self._tmp / "output.log"

    def _runc(self, *args: str) -> list[str]:
        return [RUNC, "--root", str(self._tmp / "state"), *args]

    def _spec(self, rootfs: str) -> dict:
        subprocess.run([RUNC, "spec", "--bundle", str(self._tmp)], check=True)
        spec = json.loads((self._tmp / "config.json").read_text())
        user = self.config.get("User") or "0:0"
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or not (gid or uid).isdigit():
            raise ContainerError(f"image user {user!r} is not numeric: Kubernetes cannot check runAsNonRoot")
        env = list(self.config.get("Env") or []) + [f"{k}={v}" for k, v in self.env.items()]
        entrypoint = self.command if self.command is not None else self.config.get("Entrypoint") or []
        argv = list(entrypoint) + list(
            self.args if self.args is not None else [] if self.command is not None else self.config.get("Cmd") or []
        )
        spec["root"] = {"path": rootfs, "readonly": True}
        spec["hostname"] = "container"
        process = spec["process"]
        process.update(
            terminal=False, args=argv, env=env, cwd=self.config.get("WorkingDir") or "/",
            user={"uid": int(uid), "gid": int(gid or uid)}, noNewPrivileges=True,
            capabilities={k: [] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")},
        )
        mounts = spec["mounts"]
        mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev", "mode=1777", "size=256m"]})
        if self.data_dir is not None:
            mounts.append({"destination": "/data", "type": "bind", "source": str(self.data_dir),
                           "options": ["rbind", "rw"]})
        for dest, src in self.ro_mounts.items():
            mounts.append({"destination": dest, "type": "bind", "source": str(src), "options": ["rbind", "ro"]})
        spec["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}/{self.id}"
        return spec

    def start(self) -> "Container":
        self._cid = _buildah("from", "--quiet", "--name", self.id, f"oci-archive:{self.image.archive}")
        self.config = json.loads(_buildah("inspect", "--type", "container", self._cid))["OCIv1"]["config"]
        rootfs = _buildah("mount", self._cid)
        (self._tmp / "config.json").write_text(json.dumps(self._spec(rootfs)))
        self._out = open(self.log_path, "wb")
        self._proc = subprocess.Popen(
            self._runc("run", "--bundle", str(self._tmp), self.id),
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.state() in ("running", "stopped") or self._proc.poll() is not None:
                return self
            time.sleep(0.1)
        raise ContainerError(f"container {self.id} did not start; output: {self.output()}")

    def state(self) -> str | None:
        done = subprocess.run(self._runc("state", self.id), capture_output=True, text=True)
        return json.loads(done.stdout)["status"] if done.returncode == 0 else None

    def wait(self, timeout: float) -> int:
        assert self._proc is not None
        return self._proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def exec(self, argv: list[str], timeout: float = 60, user: str | None = None) -> subprocess.CompletedProcess:
        uid = user or "{uid}:{gid}".format(**json.loads((self._tmp / "config.json").read_text())["process"]["user"])
        return subprocess.run(
            self._runc("exec", "--user", uid, self.id, *argv), capture_output=True, text=True, timeout=timeout,
        )

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                subprocess.run(self._runc("kill", self.id, "KILL"), capture_output=True)
                try:
                    self._proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            subprocess.run(self._runc("delete", "--force", self.id), capture_output=True)
            self._out.close()
            _remove_cgroup_parent()
        if self._cid:
            subprocess.run(["buildah", "umount", self._cid], capture_output=True)
            subprocess.run(["buildah", "rm", self._cid], capture_output=True)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "Container":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def run(image: Image, args: list[str] | None = None, timeout: float = 120, **kwargs) -> tuple[int, str]:
    """Run the container to completion; (exit code, output)."""
    with Container(image, args=args, **kwargs) as c:
        rc = c.wait(timeout)
        return rc, c.output()
