"""Pod templates shared by the Deployments and the migration Job.

Every pod passes the `restricted` Pod Security Standard: non-root (UID/GID 10001), read-only
root filesystem, no privilege escalation, all capabilities dropped, seccomp RuntimeDefault, and
no ServiceAccount token (the server never talks to Kubernetes). Only /tmp (emptyDir) and, when
something lives there, /data (the PVC) are writable.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from ..api import TrackingServer
from ..constants import (
    CONFIG_HASH_ANNOTATION,
    DATA_DIR,
    ENTRYPOINT,
    HEALTH_PATH,
    READY_PATH,
    HTTP_PORT,
    HTTP_PORT_NAME,
    METRICS_PORT,
    METRICS_PORT_NAME,
    RUN_AS_ID,
    SCRATCH_DIR,
)
from . import naming
from .context import RenderContext
from .environment import GCS_CREDENTIALS_DIR, GCS_CREDENTIALS_FILE, Env

TERMINATION_MESSAGE_PATH = "/dev/termination-log"  # the kubelet's default terminationMessagePath
TMP_VOLUME = "tmp"
DATA_VOLUME = "data"
GCS_VOLUME = "gcs-credentials"


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security_context(ts: TrackingServer) -> dict[str, Any]:
    overrides = ts.spec.pod_template.security_context
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_ID,
        "runAsGroup": RUN_AS_ID,
        "fsGroup": RUN_AS_ID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if overrides:
        # Only restricted-safe fields exist in PodSecurityOverrides (UIDs >= 1 by schema).
        context.update(overrides.dump())
    return context


def container(
    ts: TrackingServer,
    name: str,
    subcommand: str,
    env: Env,
    resources: dict[str, Any],
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "name": name,
        "image": naming.image(ts),
        "imagePullPolicy": ts.spec.image_pull_policy,
        "command": [ENTRYPOINT, subcommand],
        "env": env,
        "resources": resources,
        "securityContext": container_security_context(),
        # The entrypoint's last log lines become the termination message of a failed container
        # ("refusing to start: ..."), which the operator copies into the TrackingServer's status.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }


def _probe(path: str = HEALTH_PATH, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": HTTP_PORT_NAME}, "timeoutSeconds": 5, **timing}


def server_container(ts: TrackingServer, env: Env, resources: dict[str, Any], mounts: list[dict[str, Any]]) -> dict[str, Any]:
    result = container(ts, "mlflow", "serve", env, resources, mounts)
    behind_proxy = ts.spec.auth.type == "OIDC"  # the sidecar has the API port (render/oidc.py)
    result["ports"] = [] if behind_proxy else [{"name": HTTP_PORT_NAME, "containerPort": HTTP_PORT, "protocol": "TCP"}]
    if ts.spec.metrics.enabled:
        result["ports"].append({"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"})
    if not result["ports"]:
        del result["ports"]
    if behind_proxy:
        from .oidc import server_probes

        result.update(server_probes())
        return result
    # Startup allows a slow first start (5 minutes); liveness only restarts a hung server. Readiness
    # asks the database too: a pod that cannot reach it leaves the Service, and the operator reads
    # it as the database not answering the pods (controller/stores.py).
    result["startupProbe"] = _probe(periodSeconds=5, failureThreshold=60)
    result["readinessProbe"] = _probe(READY_PATH, periodSeconds=10, failureThreshold=3)
    result["livenessProbe"] = _probe(periodSeconds=20, failureThreshold=3)
    return result


def volume_mounts(with_data: bool, with_gcs: bool) -> list[dict[str, Any]]:
    mounts = [{"name": TMP_VOLUME, "mountPath": SCRATCH_DIR}]
    if with_data:
        mounts.append({"name": DATA_VOLUME, "mountPath": DATA_DIR})
    if with_gcs:
        mounts.append({"name": GCS_VOLUME, "mountPath": GCS_CREDENTIALS_DIR, "readOnly": True})
    return mounts


def volumes(ts: TrackingServer, with_data: bool, with_gcs: bool) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = [{"name": TMP_VOLUME, "emptyDir": {}}]
    if with_data:
        result.append({"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": naming.volume_claim_name(ts)}})
    if with_gcs:
        ref = ts.spec.artifacts.gcs.service_account_key.secret_key_ref
        result.append(
            {
                "name": GCS_VOLUME,
                "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": GCS_CREDENTIALS_FILE}]},
            }
        )
    return result


def pod_spec(
    ts: TrackingServer,
    containers: list[dict[str, Any]],
    init_containers: list[dict[str, Any]],
    pod_volumes: list[dict[str, Any]],
    restart_policy: str | None = None,
) -> dict[str, Any]:
    template = ts.spec.pod_template
    spec: dict[str, Any] = {
        "serviceAccountName": naming.tracking_name(ts),
        "automountServiceAccountToken": False,
        # Service links would inject variables such as MLFLOW_PORT for a Service named mlflow.
        "enableServiceLinks": False,
        "securityContext": pod_security_context(ts),
    }
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    if init_containers:
        spec["initContainers"] = init_containers
    spec["containers"] = containers
    spec["volumes"] = pod_volumes
    if ts.spec.image_pull_secrets:
        spec["imagePullSecrets"] = [ref.dump() for ref in ts.spec.image_pull_secrets]
    optional = {
        "nodeSelector": template.node_selector,
        "tolerations": [t.dump() for t in template.tolerations] if template.tolerations is not None else None,
        "affinity": template.affinity.dump() if template.affinity is not None else None,
        "topologySpreadConstraints": (
            [c.dump() for c in template.topology_spread_constraints]
            if template.topology_spread_constraints is not None else None
        ),
        "priorityClassName": template.priority_class_name,
    }
    spec.update({k: v for k, v in optional.items() if v is not None})
    return spec


def referenced_secrets(pod: dict[str, Any]) -> list[str]:
    """Names of the Secrets a pod spec reads (env secretKeyRefs and secret volumes)."""
    names = set()
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
    for v in pod.get("volumes", []):
        if "secret" in v:
            names.add(v["secret"]["secretName"])
    return sorted(names)


def config_hash(pod: dict[str, Any], context: RenderContext) -> str:
    """Digest of everything that should roll the pods: the pod spec itself and the data of each
    Secret it reads (`context.secret_hashes`; '' while unknown)."""
    secrets = {name: context.secret_hashes.get(name, "") for name in referenced_secrets(pod)}
    payload = json.dumps({"pod": pod, "secrets": secrets}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def pod_template(ts: TrackingServer, component: str, pod: dict[str, Any], context: RenderContext) -> dict[str, Any]:
    extra = ts.spec.pod_template
    labels = {**(extra.labels or {}), **naming.labels(ts, component)}
    annotations = {**(extra.annotations or {}), CONFIG_HASH_ANNOTATION: config_hash(pod, context)}
    return {
        "metadata": {"labels": dict(sorted(labels.items())), "annotations": dict(sorted(annotations.items()))},
        "spec": pod,
    }
