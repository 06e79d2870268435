"""Build the operator and server images from the repository's Dockerfiles; cache them as archives.

Each image is built once per content: the key is a hash of its Dockerfile, the files the
Dockerfile copies, the builder and the base images. The result is an OCI archive (docker:
a ``docker save`` archive) at ``<cache>/images/<name>-<key>.tar`` that containerd imports as
it is (``ctr images import``), with a ``<name>.json`` record beside it. A warm cache builds
nothing.

Builders: buildah (``bud --runtime runc --isolation oci``; crun cannot run on cgroup v1 hybrid
hosts) or, where it answers, a Docker engine. ``MLFLOW_OPERATOR_IMAGE_BUILDER=buildah|docker``
chooses. Bases: ``MLFLOW_OPERATOR_IMAGE_BASE=stock`` is the Dockerfiles' default
``python:3.11-slim-bookworm`` (pulled from its registry); ``debian`` is made here by mmdebstrap
from this machine's Debian mirror (see base.py). The default is ``stock`` with Docker and
``debian`` with buildah where mmdebstrap can run, because no container registry needs to be
reachable then.
"""
from __future__ import annotations

import configparser
import gzip
import hashlib
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from . import base, previous

REPO = Path(__file__).resolve().parents[2]
STOCK_BASE = "python:3.11-slim-bookworm"
BUILDER_ENV = "MLFLOW_OPERATOR_IMAGE_BUILDER"
BASE_ENV = "MLFLOW_OPERATOR_IMAGE_BASE"
RUNC = "/usr/sbin/runc"
# Part of every image's key: bump it when the way images are built (flags, mounts) changes.
RECIPE = "2"

Log = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """An image could not be built; the message says why and where the log is."""


def _log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(root) / "mlflow-operator" / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _chart_default_ref() -> str:
    """The operator image the chart installs by default: image.repository, tag = appVersion."""
    chart = REPO / "charts" / "mlflow-operator"
    values = (chart / "values.yaml").read_text()
    repository = re.search(r"^image:\s*\n\s+repository:\s*(\S+)", values, re.M).group(1)
    app_version = re.search(r'^appVersion:\s*"?([^"\s]+)"?', (chart / "Chart.yaml").read_text(), re.M).group(1)
    return f"{repository}:{app_version}"


def _server_default_ref() -> str:
    """The server image a TrackingServer without spec.image runs."""
    constants = runpy.run_path(str(REPO / "operator" / "mlflow_operator" / "constants.py"))
    return constants["DEFAULT_IMAGE"]


@dataclass(frozen=True)
class ImageSpec:
    name: str
    dockerfile: Path
    context: Path
    # What the Dockerfile COPYs, relative to the context: a change here means a new image.
    inputs: tuple[str, ...]
    ref: str
    # Files of the context replaced for this image (relative path, content): the build runs on a
    # copy of the context with them written in, and the key hashes them instead of the originals.
    overrides: tuple[tuple[str, str], ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    # Built for the tests only: `make images-all` (`python -m images build --all`) builds it,
    # `make images` and the demo do not.
    test_only: bool = False
    # Makes what the context holds before the key is computed (a binary built elsewhere).
    prepare: Callable[[], object] | None = None
    # FROM the Python bases (PYTHON_IMAGE, BUILD_IMAGE); an image FROM scratch needs neither made.
    python_base: bool = True


PRODUCT_IMAGES = ("operator", "server")
OAUTH2_PROXY_MIRROR = "localhost/mirror/oauth2-proxy"


def _oauth2_proxy_binary() -> Path:
    from testservices import ServiceError
    from testservices.gobinaries import oauth2_proxy_binary

    try:
        return oauth2_proxy_binary()
    except ServiceError as e:
        raise ImageBuildError(str(e)) from None


def _oauth2_proxy_context() -> Path:
    """Where gobinaries.py caches the oauth2-proxy binary it builds (built there by `prepare`)."""
    from testservices import cache_dir as services_cache
    from testservices.gobinaries import OAUTH2_PROXY_VERSION

    return services_cache() / "bin" / "oauth2-proxy" / OAUTH2_PROXY_VERSION


def specs() -> dict[str, ImageSpec]:
    server_ref = _server_default_ref()
    server_inputs = ("requirements.lock", "install.sh", "entrypoint")
    return {
        "operator": ImageSpec(
            "operator", REPO / "operator" / "Dockerfile", REPO,
            (".dockerignore", "pyproject.toml", "operator"), _chart_default_ref(),
        ),
        "server": ImageSpec(
            "server", REPO / "server-image" / "Dockerfile", REPO / "server-image", server_inputs, server_ref,
        ),
        # The same Dockerfile with the previous MLflow release in its lock (previous.py).
        "server-previous": ImageSpec(
            "server-previous", REPO / "server-image" / "Dockerfile", REPO / "server-image", server_inputs,
            f"{server_ref.rpartition(':')[0]}:{previous.PREVIOUS_MLFLOW}",
            overrides=(("requirements.lock", previous.server_lock()),),
            build_args=(("MLFLOW_VERSION", previous.PREVIOUS_MLFLOW),),
            test_only=True,
        ),
        # The sidecar of auth.type OIDC for the node tier: the oauth2-proxy binary the workload tier
        # runs (built from its Go module at the pinned release), under a mirror's name as an
        # air-gapped cluster's spec.auth.oidc.proxyImage would name it; no registry is reached.
        "oauth2-proxy": ImageSpec(
            "oauth2-proxy", REPO / "hack" / "images" / "oauth2-proxy.Dockerfile", _oauth2_proxy_context(),
            ("oauth2-proxy",), f"{OAUTH2_PROXY_MIRROR}:{_oauth2_proxy_context().name}",
            test_only=True, prepare=_oauth2_proxy_binary, python_base=False,
        ),
    }


@dataclass
class Image:
    name: str
    ref: str
    archive: str
    key: str
    builder: str
    base: str
    size_bytes: int          # unpacked layers: what the node's disk holds
    archive_bytes: int       # the archive containerd imports
    build_seconds: float

    @property
    def path(self) -> Path:
        return Path(self.archive)

    def describe(self) -> str:
        return (
            f"{self.name}: {self.ref} {self.size_bytes / 1e6:.0f} MB unpacked, "
            f"{self.archive_bytes / 1e6:.0f} MB archive ({self.path})"
        )


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def choose_builder() -> str:
    wanted = os.environ.get(BUILDER_ENV)
    if wanted:
        if wanted not in ("buildah", "docker"):
            raise ImageBuildError(f"{BUILDER_ENV}={wanted!r}: use buildah or docker")
        return wanted
    if shutil.which("buildah"):
        return "buildah"
    if _docker_answers():
        return "docker"
    raise ImageBuildError(
        "building the images needs buildah (apt-get install buildah runc; hack/system-deps does it "
        "as root) or a running Docker engine"
    )


def choose_base(builder: str) -> str:
    wanted = os.environ.get(BASE_ENV)
    if wanted:
        if wanted not in ("stock", "debian"):
            raise ImageBuildError(f"{BASE_ENV}={wanted!r}: use stock or debian")
        if wanted == "debian" and builder != "buildah":
            raise ImageBuildError(f"{BASE_ENV}=debian is made with buildah; use the stock base with docker")
        return wanted
    return "debian" if builder == "buildah" and base.available() else "stock"


def _files(root: Path, rel: str) -> list[Path]:
    path = root / rel
    if path.is_file():
        return [path]
    return sorted(
        p for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and "build" not in p.parts
        and not any(part.endswith(".egg-info") for part in p.parts)
    )


def _key(spec: ImageSpec, builder: str, base_refs: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    h.update(spec.dockerfile.read_bytes())
    for part in (RECIPE, spec.ref, builder, *base_refs, *(f"{k}={v}" for k, v in spec.build_args)):
        h.update(part.encode() + b"\0")
    overrides = dict(spec.overrides)
    for rel in spec.inputs:
        for f in _files(spec.context, rel):
            name = str(f.relative_to(spec.context))
            content = overrides[name].encode() if name in overrides else f.read_bytes()
            h.update(name.encode() + b"\0")
            h.update(hashlib.sha256(content).digest())
    return h.hexdigest()[:16]


def _context_with_overrides(spec: ImageSpec, tmp: Path) -> Path:
    """The build context itself, or a copy of its inputs with the spec's overrides written in."""
    if not spec.overrides:
        return spec.context
    context = tmp / "context"
    for rel in spec.inputs:
        for f in _files(spec.context, rel):
            target = context / f.relative_to(spec.context)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
    for rel, content in spec.overrides:
        (context / rel).write_text(content)
    return context


# Archives kept per image name: checkouts with different sources (a CI clone, worktrees) each
# find theirs instead of rebuilding in turn over one another's.
KEEP_ARCHIVES = 4


def _record_path(name: str, key: str | None = None) -> Path:
    return cache_dir() / (f"{name}-{key}.json" if key else f"{name}.json")


def cached(name: str, key: str | None = None) -> Image | None:
    """The image built for this name with this key (or the last one built for the name), if its
    archive is still there (no rebuild check)."""
    for record in ([_record_path(name, key)] if key else []) + [_record_path(name)]:
        try:
            image = Image(**json.loads(record.read_text()))
        except (FileNotFoundError, TypeError, ValueError):
            continue
        if image.path.exists() and (key is None or image.key == key):
            return image
    return None


def _prune_archives(cache: Path, name: str) -> None:
    """All but the newest KEEP_ARCHIVES archives of this image (and their records) removed."""
    # only this image's archives: "server-*" also matches server-previous-<key>.tar
    mine = [p for p in cache.glob(f"{name}-*.tar") if re.fullmatch(re.escape(name) + r"-[0-9a-f]{16}\.tar", p.name)]
    mine.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in mine[KEEP_ARCHIVES:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)


def _pip_passthrough(tmp: Path) -> tuple[list[str], list[str]]:
    """The host pip's configuration (index, CA bundle, find-links) for the RUN steps that install
    packages, named by the Dockerfiles' PIP_CONFIG_FILE build argument: it reaches only the build
    stages' pip and never the image. It is mounted on /mnt, which both bases have, because buildah
    would leave an empty mount point in the image for a path that does not exist."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    conf = configparser.ConfigParser(interpolation=None)
    mount = "/mnt"
    shared = tmp / "host-pip"
    shared.mkdir()
    volumes = [f"{shared}:{mount}:ro"]
    for line in listed.splitlines():
        m = re.match(r"^([^=]+)\.([^.=]+)='(.*)'$", line)
        if not m:
            continue
        section, option, value = m.groups()
        section = "global" if section.startswith(":env:") else section
        if option in ("cert", "client-cert") and Path(value).is_file():
            shutil.copy(value, shared / f"{option}.pem")
            value = f"{mount}/{option}.pem"
        elif option == "find-links" and Path(value).is_dir():
            if not any(Path(value).iterdir()):
                continue
            (shared / "find-links").mkdir()
            volumes.append(f"{value}:{mount}/find-links:ro")
            value = f"{mount}/find-links"
        if not conf.has_section(section):
            conf.add_section(section)
        conf.set(section, option, value)
    with open(shared / "pip.conf", "w") as fh:
        conf.write(fh)
    return volumes, [f"PIP_CONFIG_FILE={mount}/pip.conf"]


def _run(cmd: list[str], logfile: Path, what: str) -> None:
    with open(logfile, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = "".join(logfile.read_text().splitlines(keepends=True)[-15:])
        raise ImageBuildError(f"{what} failed (exit {rc}); log {logfile}:\n{tail}")


def unpacked_size(archive: Path) -> int:
    """Bytes of the image's layers unpacked (what a node stores), read from the archive itself:
    an OCI archive (gzip or plain layers) or a `docker save` one."""
    total = 0
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        if "index.json" in names:
            index = json.load(tar.extractfile("index.json"))
            manifest_digest = index["manifests"][0]["digest"]
            manifest = json.load(tar.extractfile("blobs/" + manifest_digest.replace(":", "/")))
            layers = ["blobs/" + l["digest"].replace(":", "/") for l in manifest["layers"]]
        else:
            layers = json.load(tar.extractfile("manifest.json"))[0]["Layers"]
        for name in layers:
            blob = tar.extractfile(name)
            head = blob.read(2)
            blob.seek(0)
            stream = gzip.GzipFile(fileobj=blob) if head == b"\x1f\x8b" else blob
            while chunk := stream.read(1 << 20):
                total += len(chunk)
    return total


def _build(spec: ImageSpec, builder: str, base_args: dict[str, str], key: str, log: Log) -> Image:
    cache = cache_dir()
    logfile = cache / f"{spec.name}.log"
    logfile.write_text("")
    archive = cache / f"{spec.name}-{key}.tar"
    partial = archive.with_suffix(".partial")
    started = time.monotonic()
    args = [f"--build-arg={k}={v}" for k, v in (*base_args.items(), *spec.build_args)]
    log(f"building {spec.name} ({spec.ref}) with {builder}; log: {logfile}")
    with tempfile.TemporaryDirectory(prefix="mlflow-operator-images-") as tmp:
        context = _context_with_overrides(spec, Path(tmp))
        if builder == "buildah":
            volumes, pip_args = _pip_passthrough(Path(tmp))
            _run([
                "buildah", "bud", "--runtime", RUNC, "--isolation", "oci", "--layers",
                # RUN steps install from the package index; nothing else is reached.
                "--network", "host", "--pull=never" if base_args else "--pull=true",
                *(f"--volume={v}" for v in volumes),
                *args, *(f"--build-arg={a}" for a in pip_args),
                "-f", str(spec.dockerfile), "-t", spec.ref, str(context),
            ], logfile, f"buildah bud of {spec.name}")
            partial.unlink(missing_ok=True)
            _run(["buildah", "push", "--quiet", spec.ref, f"oci-archive:{partial}:{spec.ref}"], logfile, "buildah push")
        else:
            _run(["docker", "build", *args, "-f", str(spec.dockerfile), "-t", spec.ref, str(context)],
                 logfile, f"docker build of {spec.name}")
            _run(["docker", "save", "-o", str(partial), spec.ref], logfile, "docker save")
    partial.rename(archive)
    size = unpacked_size(archive)
    _prune_archives(cache, spec.name)
    image = Image(
        name=spec.name, ref=spec.ref, archive=str(archive), key=key, builder=builder,
        base=base_args.get("PYTHON_IMAGE", STOCK_BASE), size_bytes=size,
        archive_bytes=archive.stat().st_size, build_seconds=round(time.monotonic() - started, 1),
    )
    record = json.dumps(asdict(image), indent=2) + "\n"
    _record_path(spec.name, key).write_text(record)
    _record_path(spec.name).write_text(record)  # the last one built, for `images list`
    return image


def ensure_images(names: tuple[str, ...] = PRODUCT_IMAGES, log: Log = _log) -> dict[str, Image]:
    """Both product images (or those named), built only when their inputs changed since the last build."""
    from localcluster.build import file_lock

    builder = choose_builder()
    chosen_base = choose_base(builder)
    all_specs = specs()
    images: dict[str, Image] = {}
    for name in names:  # before the lock: a cold Go build must not hold up the other images' builds
        if all_specs[name].prepare is not None:
            all_specs[name].prepare()
    with file_lock(cache_dir() / ".lock"):
        base_args: dict[str, str] = {}
        if chosen_base == "debian" and any(all_specs[n].python_base for n in names):
            # Side by side: each mmdebstrap mostly waits on the mirror.
            with ThreadPoolExecutor(max_workers=2) as pool:
                runtime, build = pool.map(lambda kind: base.ensure(kind, cache_dir(), log), ("runtime", "build"))
            base_args = {"PYTHON_IMAGE": runtime.ref, "BUILD_IMAGE": build.ref}
        for name in names:
            spec = all_specs[name]
            bases = base_args if spec.python_base else {}
            key = _key(spec, builder, tuple(bases.values()))
            image = cached(name, key)
            if image is None:
                image = _build(spec, builder, bases, key, log)
            images[name] = image
    return images
