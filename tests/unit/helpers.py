"""Shared helpers for the unit tests: examples, manifests lookup, and the `restricted` Pod
Security Standard checked independently of the renderer."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
KUBERNETES_VERSION = "1.35"  # the Kubernetes OpenAPI schema the manifests must validate against

DB = {"secretKeyRef": {"name": "db", "key": "uri"}}
AUTH_DB = {"secretKeyRef": {"name": "db", "key": "auth-uri"}}
DATABASE = {"type": "Database", "uri": DB}


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


def load_example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


def make(spec: dict[str, Any] | None = None, name: str = "team", namespace: str = "ml", uid: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid:
        metadata["uid"] = uid
    return {
        "apiVersion": "mlflow-operator.dev/v1alpha1",
        "kind": "TrackingServer",
        "metadata": metadata,
        "spec": copy.deepcopy(spec or {}),
    }


def of_kind(manifests: list[dict], kind: str) -> list[dict]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[dict], kind: str, name: str | None = None) -> dict:
    found = [m for m in of_kind(manifests, kind) if name is None or m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[m['metadata']['name'] for m in found]}"
    return found[0]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(workload: dict, name: str = "mlflow", init: bool = False) -> dict:
    key = "initContainers" if init else "containers"
    found = [c for c in pod_spec(workload).get(key, []) if c["name"] == name]
    assert len(found) == 1, f"no {'init ' if init else ''}container {name}"
    return found[0]


def env(c: dict) -> dict[str, Any]:
    """name -> literal value, or ('secret', name, key) / ('field', path) for references."""
    result: dict[str, Any] = {}
    for e in c.get("env", []):
        if "value" in e:
            result[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            result[e["name"]] = ("secret", ref["name"], ref["key"])
        elif "fieldRef" in e.get("valueFrom", {}):
            result[e["name"]] = ("field", e["valueFrom"]["fieldRef"]["fieldPath"])
        else:
            result[e["name"]] = ("other", e.get("valueFrom"))
    return result


def pod_templates(manifests: list[dict]) -> list[tuple[str, dict]]:
    return [(f"{m['kind']}/{m['metadata']['name']}", pod_spec(m)) for m in manifests if m["kind"] in ("Deployment", "Job")]


# --- The `restricted` Pod Security Standard (Kubernetes docs, "Pod Security Standards") -------

ALLOWED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def restricted_violations(pod: dict) -> list[str]:
    problems = []
    pod_sc = pod.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{flag} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} has type {kinds}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser 0")
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("privileged"):
            problems.append(f"{where} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where} allows privilege escalation")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{where} does not drop ALL capabilities")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where} adds capabilities {caps['add']}")
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")) or sc.get("runAsNonRoot") is False:
            problems.append(f"{where} may run as root")
        if sc.get("runAsUser") == 0:
            problems.append(f"{where} runAsUser 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where} has seccomp profile {seccomp}")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{where} uses a hostPort")
    return problems


# --- Kubernetes OpenAPI validation ---------------------------------------------------------------

_schema_cache_installed = False


def validate_manifest(manifest: dict) -> None:
    """kubernetes-validate, strict (unknown fields are errors), against KUBERNETES_VERSION.

    kubernetes-validate re-reads its multi-megabyte definitions file on every call; caching the
    parsed JSON (read-only) makes the suite several times faster without changing the check."""
    global _schema_cache_installed
    import functools

    import kubernetes_validate
    import kubernetes_validate.utils as kv_utils

    if not _schema_cache_installed:
        kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)
        _schema_cache_installed = True
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
