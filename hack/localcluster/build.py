"""Build, once, everything the local control plane runs, and cache it outside the repo.

Layout (``${XDG_CACHE_HOME:-~/.cache}/mlflow-operator``)::

    bin/<kubernetes version>/          kube-apiserver kube-controller-manager kube-scheduler kubectl
                                       kubelet kube-proxy etcd kwok helm, one ``.<name>.version`` stamp
                                       per component (the node's CoreDNS, provisioner and images:
                                       node_build.py)
    bin/<kubernetes version>/crds/     gateway-api-<v>/{standard,experimental}/*.yaml
                                       prometheus-operator-<v>/monitoring.coreos.com_servicemonitors.yaml
    build/kubernetes-<version>/        the throwaway Go module (go.mod, cmd/etcd) and build.log

The Kubernetes binaries (control plane, kubectl, kubelet, kube-proxy) and etcd come out of ONE ``go build`` of a throwaway module that
requires k8s.io/kubernetes and replaces each staging module (``k8s.io/api`` ...) with its
published ``v0.<minor>.<patch>`` (the pattern kubernetes-sigs/scheduler-plugins uses). etcd is
a three-line main calling ``go.etcd.io/etcd/server/v3/etcdmain`` at the version Kubernetes' own
go.mod requires. kwok and helm are ``go install``-ed at pinned versions. Only what is missing or
stamped with another version is built: a warm cache does no work.

Stdlib only: this runs before any virtualenv exists.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from . import versions

K8S_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy")
ALL_BINARIES = K8S_BINARIES + ("etcd", "kwok", "helm")

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """A binary or CRD could not be built or fetched; the message says why and where the log is."""


def _default_log(msg: str) -> None:
    print(f"[localcluster] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mlflow-operator"


def bin_dir(kubernetes: str = versions.KUBERNETES) -> Path:
    return cache_root() / "bin" / kubernetes


def crd_dir(kubernetes: str = versions.KUBERNETES) -> Path:
    return bin_dir(kubernetes) / "crds"


def gateway_api_crd_dir(channel: str = "standard") -> Path:
    return crd_dir() / f"gateway-api-{versions.GATEWAY_API}" / channel


def servicemonitor_crd_file() -> Path:
    return (
        crd_dir()
        / f"prometheus-operator-{versions.PROMETHEUS_OPERATOR}"
        / "monitoring.coreos.com_servicemonitors.yaml"
    )


def _stamp(name: str) -> Path:
    return bin_dir() / f".{name}.version"


def _expected(name: str, etcd_version: str | None = None) -> str:
    if name in K8S_BINARIES:
        return versions.KUBERNETES
    if name == "etcd":
        return f"{etcd_version or '?'} (for kubernetes {versions.KUBERNETES})"
    return {"kwok": versions.KWOK, "helm": versions.HELM}[name]


def _is_current(name: str) -> bool:
    path, stamp = bin_dir() / name, _stamp(name)
    if not (path.is_file() and os.access(path, os.X_OK) and stamp.is_file()):
        return False
    recorded = stamp.read_text().strip()
    if name == "etcd":  # the etcd version is only known after reading kubernetes' go.mod
        return recorded.endswith(f"(for kubernetes {versions.KUBERNETES})") or recorded.startswith("debian")
    return recorded == _expected(name)


def missing() -> list[str]:
    """Names of binaries/CRD sets not in the cache at the pinned versions."""
    out = [n for n in ALL_BINARIES if not _is_current(n)]
    if not (gateway_api_crd_dir().is_dir() and any(gateway_api_crd_dir().glob("*.yaml"))):
        out.append("gateway-api-crds")
    if not servicemonitor_crd_file().is_file():
        out.append("servicemonitor-crd")
    return out


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise cache builds between concurrent sessions (two pytest runs, `hack/cluster up`).
    The test services (hack/testservices) take their cache locks with this too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _go() -> str:
    go = shutil.which("go")
    if not go:
        raise BuildError(
            "the Go toolchain (`go`, >= 1.25) is not on PATH: it is needed once to build "
            "kube-apiserver, etcd, kwok and helm into " + str(bin_dir())
        )
    return go


def _go_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    flags = env.get("GOFLAGS", "")
    flags = " ".join(f for f in flags.split() if not f.startswith("-mod="))
    env.update(
        CGO_ENABLED="0",
        GO111MODULE="on",
        GOFLAGS=(flags + " -mod=mod").strip(),
    )
    env.update(extra)
    return env


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _run_logged(cmd: list[str], cwd: Path, log_file: Path, env: dict[str, str], what: str, log: Log) -> None:
    """Run a long Go command with its output in log_file and a heartbeat every minute."""
    start = time.monotonic()
    with open(log_file, "ab") as out:
        out.write(("\n$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            next_beat = 60.0
            while proc.poll() is None:
                time.sleep(1)
                elapsed = time.monotonic() - start
                if elapsed >= next_beat:
                    log(f"  ... still building {what} ({elapsed / 60:.0f} min; log: {log_file})")
                    next_beat += 60
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if proc.returncode != 0:
        raise BuildError(f"building {what} failed (exit {proc.returncode}); log {log_file}:\n{_tail(log_file)}")


def _mod_download(module: str, version: str, workdir: Path) -> dict:
    """`go mod download -json module@version` -> its JSON (Dir, GoMod, ...)."""
    proc = subprocess.run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        cwd=workdir, env=_go_env(GOFLAGS=""), capture_output=True, text=True,
    )
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        info = {}
    if proc.returncode != 0 or info.get("Error") or not info.get("Dir"):
        raise BuildError(
            f"go mod download {module}@{version} failed: {info.get('Error') or proc.stderr.strip() or proc.stdout.strip()}"
        )
    return info


def parse_kubernetes_gomod(text: str) -> tuple[list[str], str]:
    """From k8s.io/kubernetes' go.mod: the staging modules it replaces with ./staging/..., and
    the go.etcd.io/etcd/server/v3 version it requires."""
    staging = re.findall(r"^\s*(k8s\.io/[\w.\-/]+)\s*=>\s*\./staging/", text, re.M)
    m = re.search(r"^\s*go\.etcd\.io/etcd/server/v3\s+(v\S+)", text, re.M)
    if not staging or not m:
        raise BuildError("unexpected k8s.io/kubernetes go.mod: no staging replaces or no etcd server version")
    return staging, m.group(1)


def kubernetes_build_module(staging: list[str], etcd_version: str, go_directive: str = "1.25.0") -> str:
    """The throwaway go.mod that builds the Kubernetes binaries and etcd in one `go build`."""
    sv = versions.staging_version()
    lines = [
        "// Generated by hack/localcluster/build.py: a throwaway module to build Kubernetes",
        "// binaries and etcd from the Go module proxy. Safe to delete.",
        "module localcluster.invalid/kubernetes-build",
        "",
        f"go {go_directive}",
        "",
        "require (",
        f"\tk8s.io/kubernetes {versions.KUBERNETES}",
        f"\tgo.etcd.io/etcd/server/v3 {etcd_version}",
        ")",
        "",
        "replace (",
        *[f"\t{mod} => {mod} {sv}" for mod in staging],
        ")",
        "",
    ]
    return "\n".join(lines)


ETCD_MAIN = """// etcd built at the version k8s.io/kubernetes requires (see go.mod).
package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


def _version_ldflags() -> str:
    """Stamp the version the way Kubernetes' hack/lib/version.sh does, so `kubectl version`,
    /version and helm's kubeVersion checks see v1.35.4 rather than v0.0.0."""
    v = versions.KUBERNETES
    major, minor, _ = v.lstrip("v").split(".")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        for key, val in (
            ("gitVersion", v), ("gitMajor", major), ("gitMinor", minor),
            ("gitTreeState", "clean"), ("buildDate", "1970-01-01T00:00:00Z"),
        ):
            flags.append(f"-X {pkg}.{key}={val}")
    return " ".join(flags)


def _install(built: Path, name: str, version_text: str) -> None:
    dest = bin_dir() / name
    tmp = dest.with_name(f".{name}.tmp")
    shutil.copy2(built, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)
    _stamp(name).write_text(version_text + "\n")


def _build_kubernetes(names: list[str], log: Log) -> None:
    """kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy and etcd: one go build."""
    work = cache_root() / "build" / f"kubernetes-{versions.KUBERNETES}"
    (work / "cmd" / "etcd").mkdir(parents=True, exist_ok=True)
    k8s = _mod_download("k8s.io/kubernetes", versions.KUBERNETES, work.parent)
    gomod_text = Path(k8s["GoMod"]).read_text()
    staging, etcd_version = parse_kubernetes_gomod(gomod_text)
    go_directive = re.search(r"^go\s+(\S+)", gomod_text, re.M).group(1)
    module_text = kubernetes_build_module(staging, etcd_version, go_directive)
    if not (work / "go.mod").is_file() or (work / "go.mod").read_text() != module_text:
        (work / "go.mod").write_text(module_text)
        (work / "go.sum").unlink(missing_ok=True)
    (work / "cmd" / "etcd" / "main.go").write_text(ETCD_MAIN)

    packages = [f"k8s.io/kubernetes/cmd/{n}" for n in K8S_BINARIES if n in names]
    if "etcd" in names:
        packages.append("./cmd/etcd")
    out = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    log_file = work / "build.log"
    cmd = [_go(), "build", "-p", os.environ.get("LOCALCLUSTER_GO_BUILD_P", "2"), "-trimpath",
           "-ldflags", _version_ldflags(), "-o", str(out) + "/", *packages]
    what = ", ".join(n for n in K8S_BINARIES + ("etcd",) if n in names)
    try:
        try:
            _run_logged(cmd, work, log_file, _go_env(), what, log)
        except BuildError as err:
            if "etcd" not in names or not packages[:-1]:
                if "etcd" in names and _debian_etcd(log, err):
                    return
                raise
            # Is it etcd that does not build? Retry without it (compiled packages are cached).
            log(f"go build failed; retrying without etcd (log: {log_file})")
            _run_logged(cmd[:-1], work, log_file, _go_env(), what.replace(", etcd", ""), log)
            for n in K8S_BINARIES:
                if n in names:
                    _install(out / n, n, versions.KUBERNETES)
            if not _debian_etcd(log, err):
                raise
            return
        for n in K8S_BINARIES:
            if n in names:
                _install(out / n, n, versions.KUBERNETES)
        if "etcd" in names:
            _install(out / "etcd", "etcd", f"{etcd_version} (for kubernetes {versions.KUBERNETES})")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _debian_etcd(log: Log, err: Exception) -> bool:
    """Fallback: Debian's etcd-server (/usr/bin/etcd) when etcd cannot be built from source."""
    system = Path("/usr/bin/etcd")
    if not system.is_file():
        log(f"etcd did not build from source and Debian's etcd-server is not installed "
            f"(apt-get install etcd-server): {err}")
        return False
    log(f"NOTE: etcd did not build from source; falling back to Debian's etcd-server ({system})")
    dest = bin_dir() / "etcd"
    dest.unlink(missing_ok=True)
    dest.symlink_to(system)
    _stamp("etcd").write_text(f"debian {system}\n")
    return True


def _go_install(name: str, package: str, version: str, log: Log) -> None:
    work = cache_root() / "build" / f"{name}-{version}"
    work.mkdir(parents=True, exist_ok=True)
    gobin = Path(tempfile.mkdtemp(prefix="gobin-", dir=work))
    try:
        env = _go_env(GOBIN=str(gobin), GOFLAGS="")
        cmd = [_go(), "install", "-p", os.environ.get("LOCALCLUSTER_GO_BUILD_P", "2"), "-trimpath",
               "-ldflags", "-s -w", f"{package}@{version}"]
        if name == "helm":  # helm's `version` and its kubeVersion defaults read these
            cmd[-2] = f"-s -w -X helm.sh/helm/v3/internal/version.version={version}"
        _run_logged(cmd, work, work / "build.log", env, f"{name} {version}", log)
        _install(gobin / name, name, version)
    finally:
        shutil.rmtree(gobin, ignore_errors=True)


def _fetch_crds(log: Log) -> None:
    work = cache_root() / "build"
    work.mkdir(parents=True, exist_ok=True)
    if not (gateway_api_crd_dir().is_dir() and any(gateway_api_crd_dir().glob("*.yaml"))):
        src = Path(_mod_download("sigs.k8s.io/gateway-api", versions.GATEWAY_API, work)["Dir"]) / "config" / "crd"
        dest = gateway_api_crd_dir().parent
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for channel in ("standard", "experimental"):
            shutil.copytree(src / channel, tmp / channel)
            for f in (tmp / channel).iterdir():
                f.chmod(0o644)
            (tmp / channel).chmod(0o755)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        log(f"fetched Gateway API {versions.GATEWAY_API} CRDs -> {dest}")
    if not servicemonitor_crd_file().is_file():
        src = Path(_mod_download("github.com/prometheus-operator/prometheus-operator",
                                 versions.PROMETHEUS_OPERATOR, work)["Dir"])
        f = src / "example" / "prometheus-operator-crd" / "monitoring.coreos.com_servicemonitors.yaml"
        if not f.is_file():
            raise BuildError(f"ServiceMonitor CRD not found in prometheus-operator {versions.PROMETHEUS_OPERATOR}: {f}")
        servicemonitor_crd_file().parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, servicemonitor_crd_file())
        servicemonitor_crd_file().chmod(0o644)
        log(f"fetched ServiceMonitor CRD (prometheus-operator {versions.PROMETHEUS_OPERATOR})")


def ensure(log: Log = _default_log) -> Path:
    """Build whatever is missing; return the bin dir. A warm cache returns at once."""
    if not missing():
        return bin_dir()
    with file_lock(cache_root() / "bin" / ".build.lock"):
        todo = missing()  # another session may have built it while we waited
        if not todo:
            return bin_dir()
        bin_dir().mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        log(f"building into {bin_dir()}: {', '.join(todo)} (cold: tens of minutes on 2 cores)")
        timings: list[str] = []
        k8s = [n for n in K8S_BINARIES + ("etcd",) if n in todo]
        if k8s:
            t = time.monotonic()
            log(f"go build {', '.join(k8s)} (Kubernetes {versions.KUBERNETES}) ...")
            _build_kubernetes(k8s, log)
            timings.append(f"{'+'.join(k8s)} {time.monotonic() - t:.0f}s")
            log(f"built {', '.join(k8s)} in {time.monotonic() - t:.0f}s")
        for name, package, version in (
            ("kwok", "sigs.k8s.io/kwok/cmd/kwok", versions.KWOK),
            ("helm", "helm.sh/helm/v3/cmd/helm", versions.HELM),
        ):
            if name in todo:
                t = time.monotonic()
                log(f"go install {package}@{version} ...")
                _go_install(name, package, version, log)
                timings.append(f"{name} {time.monotonic() - t:.0f}s")
                log(f"built {name} {version} in {time.monotonic() - t:.0f}s")
        if "gateway-api-crds" in todo or "servicemonitor-crd" in todo:
            t = time.monotonic()
            _fetch_crds(log)
            timings.append(f"crds {time.monotonic() - t:.0f}s")
        still = missing()
        if still:
            raise BuildError(f"still missing after the build: {', '.join(still)}")
        log(f"build done in {time.monotonic() - started:.0f}s ({'; '.join(timings)})")
    return bin_dir()


def ensure_crds(log: Log = _default_log) -> None:
    """Only the CRD files (no binaries): for clusters we did not start."""
    if gateway_api_crd_dir().is_dir() and any(gateway_api_crd_dir().glob("*.yaml")) and servicemonitor_crd_file().is_file():
        return
    _go()
    with file_lock(cache_root() / "bin" / ".build.lock"):
        _fetch_crds(log)
