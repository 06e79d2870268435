"""Build, once, what the real node runs beyond the Kubernetes binaries, cached like them.

Layout (``${XDG_CACHE_HOME:-~/.cache}/mlflow-operator``)::

    bin/<kubernetes version>/coredns, local-path-provisioner   Go builds, ``.<name>.version`` stamps
    images/<kubernetes version>/<name>.tar                   OCI archives, ``.<name>.version`` stamps
    build/coredns-<v>/, build/node-images/                   throwaway module, buildah storage, logs

- CoreDNS: a throwaway module whose main calls ``github.com/coredns/coredns/coremain`` at
  versions.COREDNS with only the plugins our Corefile uses (CoreDNS' documented way to build a
  trimmed server): cloud DNS back ends and their SDKs are never downloaded or compiled.
- local-path-provisioner: ``go install`` of its module at versions.LOCAL_PATH_PROVISIONER.
- Images, each ``buildah from scratch`` + copy + commit straight to ``oci-archive:``: pause (the
  sandbox image, ``build/pause/linux/pause.c`` of k8s.io/kubernetes, ``gcc -static``), coredns,
  local-path-provisioner and busybox (Debian's busybox-static: the provisioner's helper pod).
  buildah keeps its storage under build/node-images (vfs: no mounts on the host).

Stdlib only (runs from `hack/cluster build --node` before any virtualenv exists).
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from . import versions
from .build import (BuildError, Log, _default_log, _go, _go_env, _go_install, _mod_download, _run_logged, bin_dir,
                    cache_root, file_lock)

IMAGE_PREFIX = "localhost/localcluster"
BUSYBOX = Path("/bin/busybox")
RUNC = "/usr/sbin/runc"

# (directive order of CoreDNS' plugin.cfg, import path) for the plugins node.py's Corefile uses.
COREDNS_PLUGINS = (
    ("ready", "ready"),
    ("health", "health"),
    ("errors", "errors"),
    ("log", "log"),
    ("loadbalance", "loadbalance"),
    ("cache", "cache"),
    ("kubernetes", "kubernetes"),
)

GO_BINARIES = ("coredns", "local-path-provisioner")
IMAGES = ("pause", "coredns", "local-path-provisioner", "busybox", "kubectl")
# Imported into every node at start (the rest, e.g. kubectl, by load_image when a test wants it).
PRELOADED = ("pause", "coredns", "local-path-provisioner", "busybox")
# Bump when an image's recipe (files, links, config) changes, so cached archives are rebuilt.
IMAGE_RECIPE = "2"


def image_ref(name: str) -> str:
    tag = {
        "pause": versions.PAUSE,
        "coredns": versions.COREDNS,
        "local-path-provisioner": versions.LOCAL_PATH_PROVISIONER,
        "busybox": "debian",
        "kubectl": versions.KUBERNETES,
        "traefik": versions.TRAEFIK,  # opt-in: ingress_controller.py builds it
    }[name]
    return f"{IMAGE_PREFIX}/{name}:{tag}"


def image_dir() -> Path:
    return cache_root() / "images" / versions.KUBERNETES


def image_archive(name: str) -> Path:
    return image_dir() / f"{name}.tar"


def _work() -> Path:
    return cache_root() / "build"


# ---------------------------------------------------------------- what is stale
def _go_expected(name: str) -> str:
    return {"coredns": versions.COREDNS, "local-path-provisioner": versions.LOCAL_PATH_PROVISIONER}[name]


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def _identity(path: Path) -> bytes:
    """What changes when a (large) input file is replaced: size and mtime, not its bytes
    (hashing ~200 MB of binaries on every start would cost seconds)."""
    try:
        st = path.stat()
    except OSError:
        return b"?"
    return f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()


def _image_expected(name: str) -> str:
    """The stamp an image must carry: its ref, its recipe and what goes into it."""
    if name == "pause":
        src = _pause_source()
        inputs = [src.read_bytes() if src else b"?"]
    elif name == "busybox":
        inputs = [_identity(BUSYBOX)]
    elif name == "kubectl":
        inputs = [_identity(bin_dir() / "kubectl"), _identity(BUSYBOX)]
    else:
        inputs = [_identity(bin_dir() / name)]
    return f"{image_ref(name)} {_sha(*inputs, IMAGE_RECIPE.encode())}"


def _current(stamp: Path, expected: str, artifact: Path) -> bool:
    return artifact.is_file() and stamp.is_file() and stamp.read_text().strip() == expected


def missing() -> list[str]:
    """Node components not in the cache at the pinned versions."""
    out = [n for n in GO_BINARIES
           if not _current(bin_dir() / f".{n}.version", _go_expected(n), bin_dir() / n)]
    for n in IMAGES:
        if n in ("coredns", "local-path-provisioner") and n in out:
            out.append(f"image:{n}")
        elif not _current(image_dir() / f".{n}.version", _image_expected(n), image_archive(n)):
            out.append(f"image:{n}")
    return out


# ---------------------------------------------------------------- Go builds
def coredns_main() -> str:
    imports = "\n".join(f'\t_ "github.com/coredns/coredns/plugin/{path}"' for _, path in COREDNS_PLUGINS)
    directives = ", ".join(f'"{d}"' for d, _ in COREDNS_PLUGINS)
    return f"""// Generated by hack/localcluster/node_build.py: CoreDNS with only the plugins the local
// cluster's Corefile uses. Safe to delete.
package main

import (
\t"github.com/coredns/coredns/core/dnsserver"
\t"github.com/coredns/coredns/coremain"
{imports}
)

func init() {{ dnsserver.Directives = []string{{{directives}}} }}

func main() {{ coremain.Run() }}
"""


def _install_binary(built: Path, name: str, version: str) -> None:
    dest = bin_dir() / name
    tmp = dest.with_name(f".{name}.tmp")
    shutil.copy2(built, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)
    (bin_dir() / f".{name}.version").write_text(version + "\n")


def _build_coredns(log: Log) -> None:
    work = _work() / f"coredns-{versions.COREDNS}"
    work.mkdir(parents=True, exist_ok=True)
    gomod = Path(_mod_download("github.com/coredns/coredns", versions.COREDNS, work.parent)["GoMod"]).read_text()
    go_directive = next((ln.split()[1] for ln in gomod.splitlines() if ln.startswith("go ")), "1.26.0")
    module = (
        "// Generated by hack/localcluster/node_build.py. Safe to delete.\n"
        "module localcluster.invalid/coredns-build\n\n"
        f"go {go_directive}\n\nrequire github.com/coredns/coredns {versions.COREDNS}\n"
    )
    # `go build -mod=mod` adds the indirect requirements to go.mod; keep them while the pin holds.
    if not (work / "go.mod").is_file() or f"github.com/coredns/coredns {versions.COREDNS}" not in (work / "go.mod").read_text():
        (work / "go.mod").write_text(module)
        (work / "go.sum").unlink(missing_ok=True)
    (work / "main.go").write_text(coredns_main())
    out = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    try:
        cmd = [_go(), "build", "-p", os.environ.get("LOCALCLUSTER_GO_BUILD_P", "2"), "-trimpath",
               "-ldflags", f"-s -w -X github.com/coredns/coredns/coremain.GitCommit={versions.COREDNS}",
               "-o", str(out / "coredns"), "."]
        _run_logged(cmd, work, work / "build.log", _go_env(), f"coredns {versions.COREDNS}", log)
        _install_binary(out / "coredns", "coredns", versions.COREDNS)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _build_local_path_provisioner(log: Log) -> None:
    # Its go.mod has no replace directives, so `go install module@version` builds it as pinned
    # (its vendor/ is not in the module zip).
    _go_install("local-path-provisioner", "github.com/rancher/local-path-provisioner",
                versions.LOCAL_PATH_PROVISIONER, log)


# ---------------------------------------------------------------- images
@functools.lru_cache(maxsize=1)
def _pause_source() -> Path | None:
    root = Path(os.environ["GOMODCACHE"]) if os.environ.get("GOMODCACHE") else None
    if root is None:
        try:
            root = Path(subprocess.run([_go(), "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip())
        except (subprocess.CalledProcessError, BuildError):
            return None
    src = root / f"k8s.io/kubernetes@{versions.KUBERNETES}" / "build" / "pause" / "linux" / "pause.c"
    return src if src.is_file() else None


class _Buildah:
    """buildah with storage of its own (vfs: no overlay mounts left on the host) and runc."""

    def __init__(self, log_file: Path):
        exe = shutil.which("buildah")
        if not exe:
            raise BuildError("buildah is needed to build the node's images (hack/system-deps installs it: apt-get install buildah)")
        self.base = _work() / "node-images"
        self.cmd = [exe, "--root", str(self.base / "root"), "--runroot", str(self.base / "runroot"), "--storage-driver", "vfs"]
        self.log_file = log_file
        self.env = dict(os.environ, BUILDAH_RUNTIME=RUNC, BUILDAH_ISOLATION="oci")

    def __call__(self, *args: str) -> str:
        with open(self.log_file, "a") as fh:
            fh.write("$ buildah " + " ".join(args) + "\n")
        proc = subprocess.run([*self.cmd, *args], capture_output=True, text=True, env=self.env)
        with open(self.log_file, "a") as fh:
            fh.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise BuildError(f"buildah {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return proc.stdout.strip()


def _build_image(name: str, files: dict[str, Path], symlinks: dict[str, str], config: list[str], log_file: Path) -> None:
    """An image FROM scratch holding `files` (image path -> host file) and `symlinks`, written as
    an OCI archive with its reference in the index (ctr import keeps it)."""
    buildah = _Buildah(log_file)
    staging = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=buildah.base.parent))
    ctr = None
    try:
        for dest, src in files.items():
            target = staging / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            target.chmod(0o755)
        for link, to in symlinks.items():
            target = staging / link.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(to)
        (staging / "tmp").mkdir(exist_ok=True)
        (staging / "tmp").chmod(0o1777)
        ctr = buildah("from", "--pull-never", "scratch")
        buildah("copy", "--chown", "0:0", ctr, str(staging) + "/", "/")
        buildah("config", "--os", "linux", "--arch", "amd64", *config, ctr)
        image_dir().mkdir(parents=True, exist_ok=True)
        tmp = image_dir() / f".{name}.tar.tmp"
        tmp.unlink(missing_ok=True)
        ref = image_ref(name)
        buildah("commit", "--format", "oci", "--rm", "--timestamp", "0", ctr, f"oci-archive:{tmp}:{ref}")
        ctr = None
        os.replace(tmp, image_archive(name))
        (image_dir() / f".{name}.version").write_text(_image_expected(name) + "\n")
    finally:
        if ctr:
            try:
                buildah("rm", ctr)
            except BuildError:
                pass
        shutil.rmtree(staging, ignore_errors=True)


def _build_pause(log_file: Path) -> None:
    src = _pause_source()
    if src is None:
        raise BuildError(f"pause.c not found in the Go module cache (k8s.io/kubernetes@{versions.KUBERNETES}): build the control plane first")
    gcc = shutil.which("gcc")
    if not gcc:
        raise BuildError("gcc is needed to build the pause image (apt-get install gcc libc6-dev)")
    out = Path(tempfile.mkdtemp(prefix="pause-", dir=_work()))
    try:
        proc = subprocess.run(
            [gcc, "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{versions.PAUSE}-localcluster",
             "-o", str(out / "pause"), str(src)],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise BuildError(f"gcc -static pause.c failed (is libc6-dev installed?): {proc.stderr.strip()}")
        _build_image("pause", {"/pause": out / "pause"}, {}, ["--entrypoint", '["/pause"]', "--user", "65535:65535"], log_file)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _busybox_applets() -> list[str]:
    proc = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{BUSYBOX} --list failed: {proc.stderr.strip()}")
    return [a for a in proc.stdout.split() if a.isidentifier() or a.replace("-", "_").isidentifier()]


def _build_images(todo: list[str], log: Log) -> list[str]:
    log_file = _work() / "node-images" / "build.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    timings = []
    for name in IMAGES:
        if f"image:{name}" not in todo:
            continue
        t = time.monotonic()
        if name == "pause":
            _build_pause(log_file)
        elif name == "coredns":
            _build_image("coredns", {"/coredns": bin_dir() / "coredns"}, {},
                         ["--entrypoint", '["/coredns"]', "--user", "65532:65532"], log_file)
        elif name == "local-path-provisioner":
            _build_image("local-path-provisioner", {"/usr/bin/local-path-provisioner": bin_dir() / "local-path-provisioner"}, {},
                         ["--env", "PATH=/usr/bin:/bin", "--entrypoint", '["/usr/bin/local-path-provisioner"]'], log_file)
        elif name in ("busybox", "kubectl"):
            if not BUSYBOX.is_file():
                raise BuildError("Debian's busybox-static is needed for the provisioner's helper image (apt-get install busybox-static)")
            links = {f"/bin/{tool}": "busybox" for tool in _busybox_applets() if tool != "busybox"}
            files = {"/bin/busybox": BUSYBOX}
            if name == "kubectl":  # a real client in a pod: in-cluster config, verifies the API's certificate
                files["/usr/bin/kubectl"] = bin_dir() / "kubectl"
            _build_image(name, files, links,
                         ["--env", "PATH=/usr/bin:/bin", "--env", "HOME=/tmp", "--entrypoint", '["/bin/sh"]'], log_file)
        timings.append(f"image {name} {time.monotonic() - t:.1f}s")
        log(f"built image {image_ref(name)} -> {image_archive(name)} in {time.monotonic() - t:.1f}s")
    return timings


def ensure(log: Log = _default_log) -> dict[str, Path]:
    """Build whatever the node needs and is missing (after build.ensure(): pause.c comes from
    the k8s.io/kubernetes module it downloaded). Returns image name -> OCI archive."""
    if missing():
        with file_lock(cache_root() / "bin" / ".build.lock"):
            todo = missing()
            if todo:
                started = time.monotonic()
                log(f"building the node's components: {', '.join(todo)}")
                timings = []
                bin_dir().mkdir(parents=True, exist_ok=True)
                for name, fn in (("coredns", _build_coredns), ("local-path-provisioner", _build_local_path_provisioner)):
                    if name in todo:
                        t = time.monotonic()
                        log(f"go build {name} ...")
                        fn(log)
                        timings.append(f"{name} {time.monotonic() - t:.0f}s")
                        log(f"built {name} in {time.monotonic() - t:.0f}s")
                timings += _build_images(missing(), log)
                still = missing()
                if still:
                    raise BuildError(f"still missing after the node build: {', '.join(still)}")
                log(f"node build done in {time.monotonic() - started:.0f}s ({'; '.join(timings)})")
    return {n: image_archive(n) for n in IMAGES}
