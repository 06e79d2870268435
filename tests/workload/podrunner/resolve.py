"""From a pod spec to what a container runtime gets: argv, environment, mounts, working directory.

Each rule follows the kubelet (pkg/kubelet/kubelet_pods.go, makeEnvironmentVariables and
makeMounts; pkg/kubelet/container/helpers.go, ExpandContainerCommandAndArgs):

- env: envFrom first (ConfigMaps and Secrets, with prefix), then `env` in order, each `value` expanded
  with `$(VAR)` against the variables defined before it; valueFrom: secretKeyRef, configMapKeyRef
  (optional ones skipped when missing), fieldRef (metadata.name/namespace/uid/labels/annotations,
  spec.nodeName, spec.serviceAccountName, status.podIP(s), status.hostIP(s)); service links when
  enableServiceLinks is not false (addresses are the ClusterIPs' loopback images, see network.py).
  The runtime's environment is then: HOSTNAME, the image's ENV, the container's env on top.
- command/args: the container's command replaces the image's ENTRYPOINT (and drops its CMD); args
  replace CMD; both expanded with `$(VAR)` against the container's env.
- volumes: emptyDir (a directory per pod, kept across container restarts, removed with the pod),
  persistentVolumeClaim (the bound PersistentVolume's hostPath or local path: the data outlives pods),
  secret and configMap (files written once when the pod starts, items/defaultMode honoured), hostPath.
  volumeMounts (with subPath and readOnly) are bind mounts at their mountPath in the container's own
  mount namespace (nsexec.py), so paths in env and args need no rewriting: /data and /tmp mean what
  they mean in the pod. The pod's /etc/hosts is the runner's hosts file (network.py).
- workingDir: the container's, else the image's WORKDIR.

What cannot be resolved raises Unresolvable: `transient` ones (a Secret, ConfigMap or key that does
not exist yet, a claim not bound yet) are retried as the kubelet does (CreateContainerConfigError);
anything the runner does not implement is refused for good, with the reason. Nothing is guessed.
"""
from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from .expansion import expand, mapping_for
from .images import ImageConfig, ImageError, ImageStore
from .kube import Kube, Obj, ns_path

SUPPORTED_VOLUMES = ("emptyDir", "persistentVolumeClaim", "secret", "configMap", "hostPath")
VOLUME_ROOT = "volumes"


class Unresolvable(Exception):
    def __init__(self, reason: str, message: str, transient: bool = False):
        super().__init__(message)
        self.reason, self.message, self.transient = reason, message, transient


@dataclass
class ContainerPlan:
    name: str
    image: str
    image_config: ImageConfig
    argv: list[str]
    env: dict[str, str]
    working_dir: str
    mounts: list[dict[str, Any]]
    read_only_root: bool
    ports: dict[str, int] = field(default_factory=dict)


# ---- what the runner refuses outright ----------------------------------------------------------

def unsupported(pod: Obj) -> list[str]:
    """Features of the pod spec the runner does not implement (the pod is rejected, not guessed at)."""
    spec = pod["spec"]
    problems = []
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        problems.append("host namespaces (hostNetwork/hostPID/hostIPC)")
    if spec.get("shareProcessNamespace"):
        problems.append("shareProcessNamespace")
    for vol in spec.get("volumes") or []:
        kinds = [k for k in vol if k != "name"]
        if not any(k in SUPPORTED_VOLUMES for k in kinds):
            problems.append(f"volume {vol['name']} of type {', '.join(kinds)} (supported: {', '.join(SUPPORTED_VOLUMES)})")
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        what = f"container {c['name']}"
        if c.get("restartPolicy"):
            problems.append(f"{what}: sidecar init containers (restartPolicy {c['restartPolicy']})")
        if c.get("lifecycle"):
            problems.append(f"{what}: lifecycle hooks")
        if c.get("volumeDevices"):
            problems.append(f"{what}: volumeDevices")
        if c.get("stdin") or c.get("tty"):
            problems.append(f"{what}: stdin/tty")
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(probe_name)
            if probe and not (probe.get("httpGet") or probe.get("tcpSocket")):
                problems.append(f"{what}: {probe_name} other than httpGet/tcpSocket")
            if probe and (probe.get("httpGet") or {}).get("host"):
                problems.append(f"{what}: {probe_name} with an explicit host")
        for env in c.get("env") or []:
            source = env.get("valueFrom") or {}
            if "resourceFieldRef" in source:
                problems.append(f"{what}: env {env['name']} from resourceFieldRef")
            ref = source.get("fieldRef")
            if ref and not _field_supported(ref["fieldPath"]):
                problems.append(f"{what}: env {env['name']} from fieldRef {ref['fieldPath']}")
        for mount in c.get("volumeMounts") or []:
            if mount.get("subPathExpr"):
                problems.append(f"{what}: volumeMount {mount['name']} with subPathExpr")
    return problems


_FIELDS = ("metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName",
           "status.podIP", "status.podIPs", "status.hostIP", "status.hostIPs")
_MAP_FIELD = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def _field_supported(path: str) -> bool:
    return path in _FIELDS or bool(_MAP_FIELD.match(path))


# ---- objects the pod reads ----------------------------------------------------------------------

class Sources:
    """Secrets, ConfigMaps and volumes, read with the kubelet's (node) credentials: the node
    authorizer lets it read only what pods bound to it reference."""

    def __init__(self, kube: Kube, namespace: str):
        self.kube, self.namespace = kube, namespace
        self._cache: dict[tuple[str, str], Obj | None] = {}

    def _get(self, kind_path: str, name: str, what: str) -> Obj | None:
        key = (kind_path, name)
        if key not in self._cache:
            try:
                self._cache[key] = self.kube.get(ns_path(kind_path, self.namespace, name))
            except ApiException as exc:
                if exc.status == 403:  # the node authorizer's graph can lag the pod by a moment
                    raise Unresolvable("CreateContainerConfigError", f"{what} {name!r}: forbidden to this node yet",
                                       transient=True) from None
                raise
        return self._cache[key]

    def data(self, kind: str, name: str, optional: bool = False) -> dict[str, bytes] | None:
        """Decoded data of a Secret or ConfigMap; None when optional and missing."""
        obj = self._get("/api/v1/secrets" if kind == "Secret" else "/api/v1/configmaps", name, kind)
        if obj is None:
            if optional:
                return None
            raise Unresolvable("CreateContainerConfigError", f'{kind.lower()} "{name}" not found', transient=True)
        if kind == "Secret":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        out = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return out

    def claim_path(self, claim: str) -> Path:
        pvc = self._get("/api/v1/persistentvolumeclaims", claim, "PersistentVolumeClaim")
        if pvc is None:
            raise Unresolvable("FailedMount", f'persistentvolumeclaim "{claim}" not found', transient=True)
        volume = (pvc.get("spec") or {}).get("volumeName")
        if (pvc.get("status") or {}).get("phase") != "Bound" or not volume:
            raise Unresolvable("FailedMount", f'persistentvolumeclaim "{claim}" is not bound', transient=True)
        pv = self.kube.get(f"/api/v1/persistentvolumes/{volume}")
        if pv is None:
            raise Unresolvable("FailedMount", f'persistentvolume "{volume}" not found', transient=True)
        spec = pv.get("spec") or {}
        source = spec.get("hostPath") or spec.get("local")
        if not source:
            kinds = [k for k in spec if k not in ("capacity", "accessModes", "claimRef", "persistentVolumeReclaimPolicy",
                                                  "storageClassName", "volumeMode", "nodeAffinity", "mountOptions")]
            raise Unresolvable("PodRunnerUnsupported",
                               f"persistentvolume {volume} is {', '.join(kinds)}: only hostPath and local volumes can be mounted")
        path = Path(source["path"])
        if not path.is_dir():
            raise Unresolvable("FailedMount", f"persistentvolume {volume}: {path} is not a directory", transient=True)
        return path


# ---- volumes -------------------------------------------------------------------------------------

def _write_files(target: Path, data: dict[str, bytes], items: list[Obj] | None, default_mode: int | None, what: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    pairs = [(i["key"], i["path"], i.get("mode")) for i in items] if items else [(k, k, None) for k in data]
    for key_, rel, mode in pairs:
        if key_ not in data:
            raise Unresolvable("FailedMount", f"{what}: couldn't find key {key_}", transient=True)
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[key_])
        os.chmod(path, mode if mode is not None else (default_mode if default_mode is not None else 0o644))


def prepare_volumes(pod: Obj, sources: Sources, pod_dir: Path) -> dict[str, Path]:
    """Every volume of the pod as a host directory (created on first call, reused after)."""
    out: dict[str, Path] = {}
    for vol in pod["spec"].get("volumes") or []:
        name = vol["name"]
        if "emptyDir" in vol:
            path = pod_dir / VOLUME_ROOT / "kubernetes.io~empty-dir" / name
            path.mkdir(parents=True, exist_ok=True)
        elif "persistentVolumeClaim" in vol:
            path = sources.claim_path(vol["persistentVolumeClaim"]["claimName"])
        elif "hostPath" in vol:
            path = Path(vol["hostPath"]["path"])
            if vol["hostPath"].get("type") == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                raise Unresolvable("FailedMount", f"hostPath {path} does not exist", transient=True)
        else:
            kind = "Secret" if "secret" in vol else "ConfigMap"
            src = vol.get("secret") or vol.get("configMap")
            ref = src.get("secretName") or src.get("name")
            path = pod_dir / VOLUME_ROOT / f"kubernetes.io~{kind.lower()}" / name
            if not path.exists():
                data = sources.data(kind, ref, optional=bool(src.get("optional")))
                staging = path.with_name(name + ".staging")
                _write_files(staging, data or {}, src.get("items"), src.get("defaultMode"), f"{kind.lower()} {ref}")
                staging.rename(path)
        out[name] = path
    return out


def container_mounts(container: Obj, volumes: dict[str, Path], hosts_file: Path) -> list[dict[str, Any]]:
    mounts = []
    for m in container.get("volumeMounts") or []:
        source = volumes[m["name"]]
        if m.get("subPath"):
            source = source / m["subPath"]
            if not source.exists():
                source.mkdir(parents=True)
        mounts.append({"source": str(source), "target": m["mountPath"], "readOnly": bool(m.get("readOnly"))})
    if not any(m["target"] == "/etc/hosts" for m in mounts):
        mounts.append({"source": str(hosts_file), "target": "/etc/hosts", "readOnly": True})
    return mounts


# ---- environment, command, working directory -----------------------------------------------------

def _field_value(pod: Obj, path: str, pod_ip: str, host_ip: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip, "status.podIPs": pod_ip, "status.hostIP": host_ip, "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    m = _MAP_FIELD.match(path)
    return (meta.get(m.group(1)) or {}).get(m.group(2), "")


def service_link_env(services: list[tuple[str, str, list[Obj]]]) -> dict[str, str]:
    """Docker-link style variables for the Services of the pod's namespace: (name, ip, ports)."""
    env: dict[str, str] = {}
    for name, ip, ports in services:
        prefix = name.upper().replace("-", "_")
        if not ports:
            continue
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for p in ports:
            if p.get("name"):
                env[f"{prefix}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
        first = ports[0]
        env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for p in ports:
            proto = p.get("protocol", "TCP")
            base = f"{prefix}_PORT_{p['port']}_{proto}"
            env[base] = f"{proto.lower()}://{ip}:{p['port']}"
            env[base + "_PROTO"] = proto.lower()
            env[base + "_PORT"] = str(p["port"])
            env[base + "_ADDR"] = ip
    return env


def container_env(pod: Obj, container: Obj, sources: Sources, pod_ip: str, host_ip: str,
                  service_env: dict[str, str]) -> dict[str, str]:
    """The container's own variables, resolved (without the image's ENV)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef") or source.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        data = sources.data(kind, ref["name"], optional=bool(ref.get("optional")))
        for k, v in (data or {}).items():
            if "=" not in k:
                env[(source.get("prefix") or "") + k] = v.decode()
    for var in container.get("env") or []:
        name, value_from = var["name"], var.get("valueFrom")
        if value_from is None:
            env[name] = expand(var.get("value", ""), mapping_for(env, service_env))
            continue
        if "fieldRef" in value_from:
            env[name] = _field_value(pod, value_from["fieldRef"]["fieldPath"], pod_ip, host_ip)
            continue
        ref = value_from.get("secretKeyRef") or value_from.get("configMapKeyRef")
        kind = "Secret" if "secretKeyRef" in value_from else "ConfigMap"
        optional = bool(ref.get("optional"))
        data = sources.data(kind, ref["name"], optional=optional)
        if data is None:
            continue
        if ref["key"] not in data:
            if optional:
                continue
            raise Unresolvable("CreateContainerConfigError",
                               f"couldn't find key {ref['key']} in {kind} {pod['metadata']['namespace']}/{ref['name']}",
                               transient=True)
        env[name] = data[ref["key"]].decode()
    for k, v in service_env.items():
        env.setdefault(k, v)
    return env


def command_and_args(container: Obj, image: ImageConfig, env: dict[str, str]) -> list[str]:
    """As the CRI runtime merges them: a command replaces ENTRYPOINT and drops CMD; args replace CMD."""
    mapping = mapping_for(env)
    command, args = container.get("command") or [], container.get("args") or []
    entrypoint = [expand(a, mapping) for a in command] if command else list(image.entrypoint)
    if args:
        rest = [expand(a, mapping) for a in args]
    else:
        rest = [] if command else list(image.cmd)
    return entrypoint + rest


def resolve_container(pod: Obj, container: Obj, images: ImageStore, sources: Sources, volumes: dict[str, Path],
                      hosts_file: Path, pod_ip: str, host_ip: str, service_env: dict[str, str],
                      hostname: str) -> ContainerPlan:
    try:
        image = images.get(container["image"])
    except ImageError as exc:
        raise Unresolvable("ErrImagePull", str(exc)) from None
    own = container_env(pod, container, sources, pod_ip, host_ip, service_env)
    env = {"HOSTNAME": hostname, **image.env, **own}
    security = container.get("securityContext") or {}
    return ContainerPlan(
        name=container["name"],
        image=container["image"],
        image_config=image,
        argv=command_and_args(container, image, own),
        env=env,
        working_dir=container.get("workingDir") or image.workdir or "/",
        mounts=container_mounts(container, volumes, hosts_file),
        read_only_root=bool(security.get("readOnlyRootFilesystem")),
        ports={p["name"]: p["containerPort"] for p in container.get("ports") or [] if p.get("name")},
    )
