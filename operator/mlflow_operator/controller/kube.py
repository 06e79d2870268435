"""Kubernetes API access for the reconciler: one DynamicClient, server-side apply under one field manager."""
from __future__ import annotations

import functools
import json
import logging
import time

import kubernetes
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

FIELD_MANAGER = "mlflow-operator"
log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def dynamic_client() -> DynamicClient:
    """In a pod, the ServiceAccount; elsewhere, $KUBECONFIG (as kubectl does)."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return DynamicClient(kubernetes.client.ApiClient())


# A kind missing from discovery is looked up again after this long: CRDs (Gateway API, ServiceMonitor)
# may be installed while the operator runs.
DISCOVERY_REFRESH_SECONDS = 20.0
_missing_since: dict[tuple[str, str], float] = {}


def resource(api_version: str, kind: str):
    """The API resource for a kind, or None when the cluster does not serve it (CRD not installed)."""
    client = dynamic_client()
    try:
        return client.resources.get(api_version=api_version, kind=kind)
    except ResourceNotFoundError:
        pass
    key = (api_version, kind)
    first_miss = _missing_since.setdefault(key, time.monotonic())
    if time.monotonic() - first_miss < DISCOVERY_REFRESH_SECONDS:
        return None
    _missing_since.pop(key, None)
    client.resources.invalidate_cache()
    try:
        return client.resources.get(api_version=api_version, kind=kind)
    except ResourceNotFoundError:
        _missing_since[key] = time.monotonic()
        return None


class ChildRejected(ApiException):
    """The API server refused a child as invalid (422): a spec the TrackingServer's own validation
    let through. The message names the child, its fields and the API server's words. Still an
    ApiException (status, body), for callers that handle a refusal themselves (volumes.py)."""

    def __init__(self, manifest: dict, exc: ApiException):
        super().__init__(status=exc.status, reason=exc.reason)
        self.body, self.headers = exc.body, exc.headers
        self.kind = manifest["kind"]
        self.name = manifest["metadata"]["name"]
        self.causes = [(c.get("field") or "", c.get("message") or "") for c in _status(exc).get("details", {}).get("causes") or []]
        detail = "; ".join(f"{f}: {m}" if f else m for f, m in self.causes) or error_message(exc)
        self.message = f"{self.kind} {self.name} was refused by the API server: {detail}"

    def __str__(self) -> str:
        return self.message


def apply(manifest: dict, field_manager: str = FIELD_MANAGER) -> dict:
    """Server-side apply; the operator owns every field it renders and takes them back from hand edits."""
    res = resource(manifest["apiVersion"], manifest["kind"])
    if res is None:
        raise ResourceNotFoundError(f"{manifest['apiVersion']} {manifest['kind']} is not served by this cluster")
    try:
        result = dynamic_client().server_side_apply(
            res,
            body=manifest,
            namespace=manifest["metadata"].get("namespace"),
            field_manager=field_manager,
            force_conflicts=True,
        )
    except ApiException as exc:
        if exc.status == 422:
            raise ChildRejected(manifest, exc) from exc
        raise
    return result.to_dict()


def _status(exc: ApiException) -> dict:
    try:
        body = json.loads(exc.body)
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def error_message(exc: ApiException) -> str:
    """The API server's own message from an error response (its Status body), for conditions."""
    try:
        return json.loads(exc.body).get("message", "") or str(exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.body or exc.reason)[:500]


def get(api_version: str, kind: str, namespace: str, name: str) -> dict | None:
    res = resource(api_version, kind)
    if res is None:
        return None
    try:
        return dynamic_client().get(res, name=name, namespace=namespace).to_dict()
    except NotFoundError:
        return None


def list_objects(api_version: str, kind: str, namespace: str, label_selector: str, field_selector: str | None = None) -> list[dict]:
    res = resource(api_version, kind)
    if res is None:
        return []
    selectors = {"label_selector": label_selector, **({"field_selector": field_selector} if field_selector else {})}
    return [item.to_dict() for item in dynamic_client().get(res, namespace=namespace, **selectors).items]


def delete(api_version: str, kind: str, namespace: str, name: str, propagation: str = "Background",
           uid: str | None = None) -> bool:
    """With `uid`, only that very object: one re-created under the same name meanwhile is left alone."""
    res = resource(api_version, kind)
    if res is None:
        return False
    body: dict = {"propagationPolicy": propagation}
    if uid:
        body["preconditions"] = {"uid": uid}
    try:
        dynamic_client().delete(res, name=name, namespace=namespace, body=body)
        return True
    except NotFoundError:
        return False
    except ApiException as exc:
        if uid and exc.status == 409:
            return False
        raise


def create(manifest: dict) -> dict | None:
    """Create, or None when it exists already (used only for values that must never be overwritten)."""
    res = resource(manifest["apiVersion"], manifest["kind"])
    try:
        return dynamic_client().create(res, body=manifest, namespace=manifest["metadata"].get("namespace"), field_manager=FIELD_MANAGER).to_dict()
    except kubernetes.client.exceptions.ApiException as exc:
        if exc.status == 409:
            return None
        raise


def patch_status(api_version: str, kind: str, namespace: str, name: str, status: dict) -> None:
    res = resource(api_version, kind)
    dynamic_client().patch(
        res.subresources["status"],
        body={"status": status},
        name=name,
        namespace=namespace,
        content_type="application/merge-patch+json",
    )


def patch(api_version: str, kind: str, namespace: str, name: str, body: dict) -> dict:
    """JSON merge patch, for metadata the operator changes on objects it does not server-side apply."""
    res = resource(api_version, kind)
    return dynamic_client().patch(
        res, body=body, name=name, namespace=namespace, content_type="application/merge-patch+json",
    ).to_dict()
