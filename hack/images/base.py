"""Debian bookworm base images made with mmdebstrap, for machines that reach no container registry.

The Dockerfiles default to the stock ``python:3.11-slim-bookworm``. Where that image cannot be
pulled, two bases are made from this machine's own Debian mirror (its /etc/apt configuration):

- ``runtime``: python3 and ca-certificates (the final stage of both images);
- ``build``:   the same plus python3-venv and python3-pip (the stages that install packages).

Both have python3 in /usr/bin; the stock image has it in /usr/local/bin. The Dockerfiles only
call ``python3`` and build virtualenvs from it, so they work on either. The rootfs tarballs are
cached by a hash of the package list and the apt configuration; the mirror configuration is
removed from the image so it carries nothing of this machine.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

Log = Callable[[str], None]

SUITE = "bookworm"
PACKAGES = {
    "runtime": ("python3", "ca-certificates"),
    "build": ("python3", "ca-certificates", "python3-venv", "python3-pip"),
}
# What the slim images leave out too; copyright files stay (licences).
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)
# The mirror configuration mmdebstrap copies into the chroot: not for the image.
STRIP_HOOK = (
    'rm -f "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/* '
    '"$1"/etc/apt/apt.conf.d/99mmdebstrap "$1"/var/log/apt/* "$1"/var/log/dpkg.log '
    '"$1"/var/cache/ldconfig/aux-cache'
)
IMAGE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")


class BaseImageError(RuntimeError):
    """A base image could not be made; the message says why and where the log is."""


@dataclass(frozen=True)
class BaseImage:
    kind: str
    ref: str
    rootfs: Path


def apt_sources() -> list[Path]:
    """This machine's apt sources (deb822 .sources or one-line .list files)."""
    etc = Path("/etc/apt")
    found = [etc / "sources.list"] if (etc / "sources.list").is_file() else []
    found += sorted(p for p in (etc / "sources.list.d").glob("*") if p.suffix in (".list", ".sources"))
    return [p for p in found if p.read_text().strip() and _has_entries(p)]


def _has_entries(path: Path) -> bool:
    lines = [l.strip() for l in path.read_text().splitlines()]
    return any(l and not l.startswith("#") for l in lines)


def apt_options() -> list[Path]:
    """apt.conf.d files that tune how the mirror is fetched (e.g. a snapshot's validity dates)."""
    confd = Path("/etc/apt/apt.conf.d")
    return sorted(p for p in confd.glob("*") if p.is_file() and "Acquire::" in p.read_text(errors="replace"))


def available() -> bool:
    return bool(shutil.which("mmdebstrap")) and bool(apt_sources())


def _key(kind: str) -> str:
    h = hashlib.sha256()
    for part in (SUITE, *PACKAGES[kind], *DPKG_OPTIONS, STRIP_HOOK, *IMAGE_ENV):
        h.update(part.encode() + b"\0")
    for path in apt_sources() + apt_options():
        h.update(str(path).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def _buildah_has_image(ref: str) -> bool:
    return subprocess.run(
        ["buildah", "inspect", "--type", "image", ref], capture_output=True
    ).returncode == 0


def ensure(kind: str, cache: Path, log: Log) -> BaseImage:
    """The base image of this kind in buildah's storage, made (or re-imported) only when missing."""
    if not available():
        raise BaseImageError(
            "making a Debian base image needs mmdebstrap and apt sources in /etc/apt "
            "(hack/system-deps installs mmdebstrap); or build on the stock python:3.11-slim-bookworm "
            "with MLFLOW_OPERATOR_IMAGE_BASE=stock"
        )
    key = _key(kind)
    ref = f"localhost/mlflow-operator-base:{SUITE}-{kind}-{key}"
    rootfs = cache / f"base-{SUITE}-{kind}-{key}.tar"
    if not rootfs.exists():
        _mmdebstrap(kind, rootfs, log)
    if not _buildah_has_image(ref):
        _import(rootfs, ref, log)
    return BaseImage(kind, ref, rootfs)


def _mmdebstrap(kind: str, rootfs: Path, log: Log) -> None:
    started = time.monotonic()
    log(f"making the Debian {SUITE} {kind} base with mmdebstrap ({', '.join(PACKAGES[kind])})")
    partial = rootfs.with_suffix(".partial.tar")
    logfile = rootfs.with_suffix(".log")
    cmd = [
        "mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
        f"--include={','.join(PACKAGES[kind])}",
        *(f"--dpkgopt={o}" for o in DPKG_OPTIONS),
        *(f"--aptopt={p}" for p in apt_options()),
        f"--customize-hook={STRIP_HOOK}",
        SUITE, str(partial), *map(str, apt_sources()),
    ]
    with open(logfile, "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        partial.unlink(missing_ok=True)
        raise BaseImageError(f"mmdebstrap failed (exit {rc}); see {logfile}")
    partial.rename(rootfs)
    log(f"{kind} base: {rootfs.stat().st_size / 1e6:.0f} MB rootfs in {time.monotonic() - started:.0f} s")


def _import(rootfs: Path, ref: str, log: Log) -> None:
    log(f"importing {rootfs.name} into buildah as {ref}")
    cid = subprocess.run(["buildah", "from", "scratch"], capture_output=True, text=True, check=True).stdout.strip()
    try:
        subprocess.run(["buildah", "add", "--quiet", cid, str(rootfs), "/"], check=True, stdout=subprocess.DEVNULL)
        config = ["buildah", "config", "--cmd", "python3", "--os", "linux"]
        for env in IMAGE_ENV:
            config += ["--env", env]
        subprocess.run([*config, cid], check=True)
        subprocess.run(["buildah", "commit", "--quiet", cid, ref], check=True, stdout=subprocess.DEVNULL)
    finally:
        subprocess.run(["buildah", "rm", cid], capture_output=True)
