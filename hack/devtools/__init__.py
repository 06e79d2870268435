"""Developer tools the tests run, built from their Go modules at pinned versions like kwok and helm
(hack/localcluster/build.py) and cached beside them: ``<cache>/tools/<name>-<version>/<name>``.

    python -m devtools build     build what is missing, print the paths
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from localcluster import build

# GitHub Actions workflow linter: the workflows cannot run here, so they are checked statically.
ACTIONLINT = ("actionlint", "github.com/rhysd/actionlint/cmd/actionlint", "v1.7.12")
TOOLS = (ACTIONLINT,)


class ToolError(RuntimeError):
    pass


def tool_path(name: str, version: str) -> Path:
    return build.cache_root() / "tools" / f"{name}-{version}" / name


def ensure(tool: tuple[str, str, str] = ACTIONLINT, timeout: float = 900) -> Path:
    """The cached binary, built first if missing (one `go install`, about a minute cold)."""
    name, package, version = tool
    path = tool_path(name, version)
    if path.is_file():
        return path
    with build.file_lock(path.parent.parent / ".build.lock"):
        if path.is_file():  # another session built it while we waited
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        gobin = Path(tempfile.mkdtemp(prefix="gobin-", dir=path.parent))
        log = path.parent / "build.log"
        try:
            cmd = [build._go(), "install", "-trimpath", "-ldflags", "-s -w",
                   f"{package}@{version}"]
            with open(log, "ab") as out:
                proc = subprocess.run(cmd, env=build._go_env(GOBIN=str(gobin), GOFLAGS=""), stdout=out,
                                      stderr=subprocess.STDOUT, timeout=timeout, cwd=path.parent)
            if proc.returncode != 0:
                raise ToolError(f"go install {package}@{version} failed; log {log}:\n{build._tail(log)}")
            shutil.move(str(gobin / name), path)
        finally:
            shutil.rmtree(gobin, ignore_errors=True)
    return path
