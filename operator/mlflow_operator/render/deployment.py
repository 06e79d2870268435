"""The server Deployments: the main one (`<name>`, component tracking) and, in Split mode, the
artifacts-only one (`<name>-artifacts`, component artifacts)."""
from __future__ import annotations

from typing import Any

from ..api import TrackingServer
from ..api import derived as d
from ..api.spec import DEFAULT_RESOURCES
from . import environment, kubeauth, naming, oidc
from .context import RenderContext
from .pod import TERMINATION_MESSAGE_PATH, container, container_security_context, pod_spec, pod_template, server_container, volume_mounts, volumes
from .storage import data_locations_annotation


def _init_containers(ts: TrackingServer, env: environment.Env, resources: dict[str, Any], mounts: list[dict[str, Any]],
                     with_data: bool, wait_seconds: int) -> list[dict[str, Any]]:
    """Before the server starts: migrate the SQLite files on the pod's own volume (external
    databases are migrated by the Job, once, not by every pod), then check every store from where
    the pod runs. The check's result (reachability, the MLflow version) is the container's
    termination message, which the operator reads into status: the operator itself never
    connects to a team's database or object store."""
    result = []
    embedded = environment.embedded_migration_env(ts)
    if embedded:
        result.append(container(ts, "migrate", "migrate", embedded, resources, volume_mounts(with_data, False)))
    check_env = [e for e in env if e["name"] != "MLFLOW_OPERATOR_BACKEND_WAIT_SECONDS"]
    check_env.append(environment.value("MLFLOW_OPERATOR_BACKEND_WAIT_SECONDS", str(wait_seconds)))
    check = container(ts, naming.CHECK_CONTAINER, "check", check_env, resources, mounts)
    check["command"] += ["--init", "--termination-message", TERMINATION_MESSAGE_PATH]
    result.append(check)
    return result


def _strategy(ts: TrackingServer, with_data: bool) -> dict[str, Any]:
    shared_volume = "ReadWriteMany" in ts.spec.storage.access_modes
    if d.embedded_backend(ts.spec) or (with_data and not shared_volume):
        # One writer at a time: the old pod releases the volume (and SQLite) before the new starts.
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def _deployment(
    ts: TrackingServer,
    name: str,
    component: str,
    replicas: int | None,
    env: environment.Env,
    resources: dict[str, Any],
    with_data: bool,
    wait_seconds: int,
    context: RenderContext,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    with_gcs = bool(ts.spec.artifacts.gcs and ts.spec.artifacts.gcs.service_account_key) and any(
        e["name"] == "GOOGLE_APPLICATION_CREDENTIALS" for e in env
    )
    mounts = volume_mounts(with_data, with_gcs)
    server = server_container(ts, env, resources, list(mounts))
    init = _init_containers(ts, env, resources, list(mounts), with_data, wait_seconds)
    pod_volumes = volumes(ts, with_data, with_gcs)
    if d.kubernetes_auth(ts.spec):
        # The server's own token, for its TokenReviews and SubjectAccessReviews (the check needs none).
        server["volumeMounts"].append(kubeauth.api_access_mount())
        pod_volumes.append(kubeauth.api_access_volume())
    containers = [server]
    if d.oidc_auth(ts.spec):
        containers.append(oidc.proxy_container(ts, container_security_context(), component))
        pod_volumes += oidc.proxy_volumes(ts, component)
    pod = pod_spec(ts, containers, init, pod_volumes)
    spec: dict[str, Any] = {}
    if replicas is not None:
        spec["replicas"] = replicas
    spec.update(
        {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": naming.selector_labels(ts, component)},
            "strategy": _strategy(ts, with_data),
            "template": pod_template(ts, component, pod, context),
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": naming.object_meta(ts, name, component, annotations=annotations),
        "spec": spec,
    }


def tracking_deployment(ts: TrackingServer, context: RenderContext) -> dict[str, Any]:
    spec = ts.spec
    resources = spec.resources.dump()
    with_data = d.tracking_needs_volume(spec)
    # While an HPA owns the replica count, leave `replicas` out so applying never fights it.
    replicas = None if spec.autoscaling else spec.replicas
    return _deployment(
        ts, naming.tracking_name(ts), naming.TRACKING, replicas, environment.tracking_env(ts, context.cluster_domain),
        resources, with_data, _wait_seconds(ts), context,
        annotations=data_locations_annotation(ts),
    )


def artifacts_deployment(ts: TrackingServer, context: RenderContext) -> dict[str, Any]:
    spec = ts.spec
    resources = spec.artifacts.resources.dump() if spec.artifacts.resources else dict(DEFAULT_RESOURCES)
    # No migration here (no backend store; Split mode keeps the auth database outside): the check only.
    return _deployment(
        ts, naming.artifacts_name(ts), naming.ARTIFACTS, d.artifacts_pod_replicas(spec),
        environment.artifacts_env(ts, context.cluster_domain), resources, d.artifacts_pods_need_volume(spec),
        _wait_seconds(ts), context,
    )


def _wait_seconds(ts: TrackingServer) -> int:
    """How long the check retries a store before it fails the pod's start (spec.backendStore.waitSeconds)."""
    store = ts.spec.backend_store
    return store.wait_seconds if store is not None else 60
