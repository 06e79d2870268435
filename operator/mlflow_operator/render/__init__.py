"""Pure rendering: a TrackingServer in, the Kubernetes manifests of its children out.

No API calls, no clock, no randomness: the same TrackingServer and RenderContext always give the
same list (and the same bytes once dumped), so `mlflow-operator render` shows exactly what the
operator will apply. What only the cluster knows (hashes of Secrets' data, freshly generated
secret values) comes in through `RenderContext`.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from ..api import TrackingServer, load_trackingserver
from ..api import derived as d
from .context import RenderContext, secret_data_hash
from .deployment import artifacts_deployment, tracking_deployment
from .httproute import http_route
from .ingress import ingress
from .kubeauth import review_binding
from .job import migration_job, needs_migration_job
from .monitoring import service_monitor
from .naming import client_url, status_selector
from .policy import autoscaler, disruption_budgets, migration_guard, network_policy
from .secrets import GeneratedSecret, fresh_secret_values, generated_secret_manifests, required_generated_secrets
from .service import artifacts_service, service_account, tracking_service
from .storage import volume_claim

Manifest = dict[str, Any]


def _with_generated_hashes(context: RenderContext) -> RenderContext:
    """A Secret generated in this pass is hashed from its values, exactly as the reconciler will
    hash it once it reads it back, so its creation does not roll the pods a second time."""
    hashes = {name: secret_data_hash(values) for name, values in context.generated_secrets.items()}
    hashes.update(context.secret_hashes)
    return replace(context, secret_hashes=hashes)


def _with_default_image(ts: TrackingServer, image: str) -> TrackingServer:
    """The operator's default image stands in for a spec that names none (in this copy only: the
    object keeps following the operator's setting)."""
    if ts.spec.image is not None:
        return ts
    return ts.model_copy(update={"spec": ts.spec.model_copy(update={"image": image})})


def render(trackingserver: TrackingServer | dict[str, Any], context: RenderContext | None = None) -> list[Manifest]:
    """The children of a TrackingServer, in the order they should be applied.

    Raises InvalidTrackingServer (naming each bad field) for a spec the API server would refuse.
    """
    context = _with_generated_hashes(context or RenderContext())
    ts = _with_default_image(load_trackingserver(trackingserver), context.default_image)
    spec = ts.spec
    out: list[Manifest] = [service_account(ts)]
    if d.kubernetes_auth(spec):
        out.append(review_binding(ts))
    out += generated_secret_manifests(ts, context)
    if d.needs_volume(spec):
        out.append(volume_claim(ts))
    if needs_migration_job(ts):
        out.append(migration_job(ts, context))
    out.append(tracking_deployment(ts, context))
    if spec.artifacts.mode == "Split":
        out.append(artifacts_deployment(ts, context))
    out.append(tracking_service(ts))
    if spec.artifacts.mode == "Split":
        out.append(artifacts_service(ts))
    if spec.ingress:
        out.append(ingress(ts))
    if spec.gateway:
        out.append(http_route(ts))
    out += disruption_budgets(ts)
    if spec.autoscaling:
        out.append(autoscaler(ts))
    if spec.network_policy.enabled:
        out.append(network_policy(ts))
    if spec.metrics.service_monitor.enabled:
        out.append(service_monitor(ts))
    # Plain, unshared data: builders reuse dicts (resources, labels), callers may mutate.
    return json.loads(json.dumps(out))


__all__ = [
    "GeneratedSecret",
    "Manifest",
    "RenderContext",
    "client_url",
    "fresh_secret_values",
    "migration_guard",
    "render",
    "required_generated_secrets",
    "secret_data_hash",
    "status_selector",
]
