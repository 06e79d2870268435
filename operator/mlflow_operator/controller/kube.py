"""Kubernetes API access for the reconciler: plain REST calls, server-side apply under one field manager.

Requests go out over one urllib3 pool with the credentials of controller/credentials.py (the
`kubernetes` client package is not used: it cost memory, and its DynamicClient was unsafe here).

Safe to call from every worker thread at once. The kinds the operator touches are a fixed table, so
no discovery runs for them: the `kubernetes` DynamicClient's discovery cache is not thread-safe
(concurrent passes failed with KeyError 'resources' / 'apis' whenever one thread refreshed it while
another read it). Only the optional kinds (Gateway API, ServiceMonitor) are looked up, one group
version at a time under a lock, so a CRD installed while the operator runs is picked up.

Every request has a connect and a read timeout, the requests of one pass share a deadline (a
half-open connection cannot hold a TrackingServer's reconciles forever), and a client-side rate
limit (a token bucket, as client-go's) keeps a burst of passes from flooding the API server.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import quote, urlencode

import urllib3

from ..api.quantity import parse_quantity
from . import credentials

FIELD_MANAGER = "mlflow-operator"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True
    optional: bool = False  # served only when its CRD is installed

    @property
    def group_version_path(self) -> str:
        return f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        path = self.group_version_path
        if self.namespaced and namespace:
            path += f"/namespaces/{quote(namespace, safe='')}"
        path += f"/{self.plural}"
        if name:
            path += f"/{quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
        return path


KINDS: dict[tuple[str, str], Kind] = {
    (k.api_version, k.kind): k
    for k in (
        Kind("mlflow-operator.dev/v1alpha1", "TrackingServer", "trackingservers"),
        Kind("v1", "Secret", "secrets"),
        Kind("v1", "Service", "services"),
        Kind("v1", "ServiceAccount", "serviceaccounts"),
        Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        Kind("v1", "Pod", "pods"),
        Kind("v1", "Event", "events"),
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("batch/v1", "Job", "jobs"),
        Kind("networking.k8s.io/v1", "Ingress", "ingresses"),
        Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
        Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", optional=True),
        Kind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors", optional=True),
        Kind("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
    )
}
CLUSTER_SCOPED_KINDS = {k.kind for k in KINDS.values() if not k.namespaced}


class ApiException(Exception):
    """The API server refused a request (status, reason, the Status body as text), or status 0:
    it could not be asked (ApiUnavailable)."""

    def __init__(self, status: int | None = None, reason: str | None = None, body: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(status, reason)
        self.status, self.reason, self.body, self.headers = status, reason, body, headers

    def __str__(self) -> str:
        text = f"({self.status})\nReason: {self.reason}\n"
        return text + (f"HTTP response body: {self.body}\n" if self.body else "")


class ApiUnavailable(ApiException):
    """The API server did not answer in time, or the connection failed: a cause in the cluster."""

    def __init__(self, reason: str):
        super().__init__(status=0, reason=reason)
        self.body = json.dumps({"message": reason})


# ---- settings (main.py sets them from the command line) ------------------------------------------

@dataclass
class Settings:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    pass_deadline: float = 120.0
    qps: float = 50.0
    burst: int = 100
    # Kept-alive connections to the API server: one per worker, or passes beyond it open a new
    # TLS connection for each request (urllib3's "Connection pool is full, discarding connection").
    connections: int = 16


settings = Settings()


class TokenBucket:
    """client-go's flowcontrol.NewTokenBucketRateLimiter: `burst` requests at once, then `qps`."""

    def __init__(self, qps: float, burst: int):
        self.qps, self.burst = qps, max(1, burst)
        self._tokens = float(self.burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if self.qps <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.qps)
            self._stamp = now
            self._tokens -= 1  # reserved; a negative balance is the wait of this caller
            delay = -self._tokens / self.qps if self._tokens < 0 else 0.0
        if delay:
            time.sleep(delay)


# ---- the client -----------------------------------------------------------------------------------

class _Client:
    def __init__(self) -> None:
        self.credentials = credentials.load()
        c = self.credentials
        tls: dict[str, Any] = {"cert_reqs": "CERT_NONE"} if c.insecure else {"cert_reqs": "CERT_REQUIRED", "ca_certs": c.ca_file}
        if c.cert_file:
            tls.update(cert_file=c.cert_file, key_file=c.key_file)
        if c.insecure:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        # Retries are ours to decide (the pass is retried); a read is not repeated behind our back.
        self.http = urllib3.PoolManager(
            num_pools=1, maxsize=max(1, settings.connections), block=False,
            retries=urllib3.Retry(total=2, connect=2, read=0, redirect=0, status=0, other=0), **tls)
        self.bucket = TokenBucket(settings.qps, settings.burst)

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None,
                content_type: str | None = None) -> dict[str, Any]:
        read = settings.read_timeout
        deadline = getattr(_local, "deadline", None)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ApiUnavailable(f"the pass ran out of its {settings.pass_deadline:g} s deadline")
            read = min(read, left)
        self.bucket.wait()
        _local.requests = getattr(_local, "requests", 0) + 1
        headers = {"Accept": "application/json", **self.credentials.headers()}
        payload = None
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
            payload = json.dumps(body, separators=(",", ":")).encode()
        params = [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (query or {}).items() if v is not None]
        url = self.credentials.server + path + (f"?{urlencode(params)}" if params else "")
        try:
            response = self.http.request(method, url, body=payload, headers=headers, preload_content=True,
                                         timeout=urllib3.Timeout(connect=settings.connect_timeout, read=read))
        except urllib3.exceptions.HTTPError as exc:
            raise ApiUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        data = response.data
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason,
                               body=data.decode(errors="replace") if data else None, headers=dict(response.headers))
        return json.loads(data) if data else {}


_client: _Client | None = None
_client_lock = threading.Lock()
_local = threading.local()


def client() -> _Client:
    """In a pod, the ServiceAccount; elsewhere, $KUBECONFIG (as kubectl does)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = _Client()
        return _client


@contextlib.contextmanager
def deadline(seconds: float | None = None) -> Iterator[None]:
    """Every request made in this thread inside the block ends by the deadline."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + (settings.pass_deadline if seconds is None else seconds)
    try:
        yield
    finally:
        _local.deadline = previous


# ---- optional kinds -------------------------------------------------------------------------------

# A kind missing from discovery is looked up again after this long: CRDs (Gateway API, ServiceMonitor)
# may be installed while the operator runs.
DISCOVERY_REFRESH_SECONDS = 20.0
_served: dict[str, tuple[float, set[str]]] = {}  # group version path -> (checked at, served plurals)
_discovery_lock = threading.Lock()


def _served_plurals(kind: Kind) -> set[str]:
    with _discovery_lock:
        hit = _served.get(kind.group_version_path)
        if hit and time.monotonic() - hit[0] < DISCOVERY_REFRESH_SECONDS:
            return hit[1]
        try:
            listing = client().request("GET", kind.group_version_path)
            plurals = {r["name"] for r in listing.get("resources") or []}
        except ApiException as exc:
            if exc.status != 404:
                raise
            plurals = set()
        _served[kind.group_version_path] = (time.monotonic(), plurals)
        return plurals


def resource(api_version: str, kind: str) -> Kind | None:
    """The API resource for a kind, or None when the cluster does not serve it (CRD not installed)."""
    found = KINDS.get((api_version, kind))
    if found is None:
        raise KeyError(f"{api_version} {kind} is not a kind the operator manages")
    if found.optional and found.plural not in _served_plurals(found):
        return None
    return found


def _kind(api_version: str, kind: str) -> Kind:
    found = resource(api_version, kind)
    if found is None:
        raise ApiException(status=404, reason=f"{api_version} {kind} is not served by this cluster (install its CRDs)")
    return found


# ---- operations -----------------------------------------------------------------------------------

class ChildRejected(ApiException):
    """The API server refused a child as invalid (422): a spec the TrackingServer's own validation
    let through. The message names the child, its fields and the API server's words. Still an
    ApiException (status, body), for callers that handle a refusal themselves (volumes.py)."""

    def __init__(self, manifest: dict, exc: ApiException):
        super().__init__(status=exc.status, reason=exc.reason)
        self.body, self.headers = exc.body, getattr(exc, "headers", None)
        self.kind = manifest["kind"]
        self.name = manifest["metadata"]["name"]
        self.causes = [(c.get("field") or "", c.get("message") or "") for c in _status(exc).get("details", {}).get("causes") or []]
        detail = "; ".join(f"{f}: {m}" if f else m for f, m in self.causes) or error_message(exc)
        self.message = f"{self.kind} {self.name} was refused by the API server: {detail}"

    def __str__(self) -> str:
        return self.message


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


def apply(manifest: dict, field_manager: str = FIELD_MANAGER) -> dict:
    """Server-side apply; the operator owns every field it renders and takes them back from hand edits."""
    return apply_if_changed(manifest, field_manager)[0]


def apply_if_changed(manifest: dict, field_manager: str = FIELD_MANAGER) -> tuple[dict, bool]:
    """Server-side apply, skipped when the cached object already carries the hash of this manifest
    and every field of it still has the value the manifest gives (no hand edit, no other field
    manager's change): a pass over a converged object writes nothing. Returns (object, written)."""
    meta = manifest["metadata"]
    # The hash is the operator's own apply's; another field manager (a hand-over) applies as given.
    desired = with_input_hash(manifest) if field_manager == FIELD_MANAGER else manifest
    view = _view()
    if view is not None and field_manager == FIELD_MANAGER:
        live = view.get(manifest["kind"], meta.get("namespace"), meta["name"])
        if live is not None and up_to_date(desired, live):
            return live, False
    kind = _kind(manifest["apiVersion"], manifest["kind"])
    try:
        result = client().request(
            "PATCH", kind.path(meta.get("namespace"), meta["name"]),
            query={"fieldManager": field_manager, "force": "true"},
            body=desired, content_type="application/apply-patch+yaml",
        )
    except ApiException as exc:
        if exc.status == 422:
            raise ChildRejected(manifest, exc) from exc
        raise
    if view is not None:
        view.put(result)
    return result, True


def get(api_version: str, kind: str, namespace: str, name: str) -> dict | None:
    view = _view()
    if view is not None and view.covers(kind, namespace):
        return view.get(kind, namespace, name)
    found = resource(api_version, kind)
    if found is None:
        return None
    try:
        return client().request("GET", found.path(namespace, name))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def list_objects(api_version: str, kind: str, namespace: str, label_selector: str, field_selector: str | None = None) -> list[dict]:
    view = _view()
    if view is not None and view.covers(kind, namespace) and not field_selector:
        selected = view.select(kind, label_selector)
        if selected is not None:
            return selected
    found = resource(api_version, kind)
    if found is None:
        return []
    listing = client().request("GET", found.path(namespace),
                               query={"labelSelector": label_selector or None, "fieldSelector": field_selector})
    items = listing.get("items") or []
    for item in items:  # a list's items carry neither; callers read them
        item.setdefault("apiVersion", api_version)
        item.setdefault("kind", kind)
    return items


def delete(api_version: str, kind: str, namespace: str, name: str, propagation: str = "Background",
           uid: str | None = None) -> bool:
    """With `uid`, only that very object: one re-created under the same name meanwhile is left alone."""
    found = resource(api_version, kind)
    if found is None:
        return False
    body: dict = {"propagationPolicy": propagation}
    if uid:
        body["preconditions"] = {"uid": uid}
    view = _view()
    if view is not None:
        view.drop(kind, namespace, name)
    try:
        client().request("DELETE", found.path(namespace, name), body=body, content_type="application/json")
        return True
    except ApiException as exc:
        if exc.status == 404 or (uid and exc.status == 409):
            return False
        raise


def create(manifest: dict) -> dict | None:
    """Create, or None when it exists already (used only for values that must never be overwritten)."""
    kind = _kind(manifest["apiVersion"], manifest["kind"])
    try:
        created = client().request("POST", kind.path(manifest["metadata"].get("namespace")),
                                   query={"fieldManager": FIELD_MANAGER}, body=manifest, content_type="application/json")
        view = _view()
        if view is not None:
            view.put(created)
        return created
    except ApiException as exc:
        if exc.status == 409:
            return None
        raise


def patch_status(api_version: str, kind: str, namespace: str, name: str, status: dict) -> dict:
    found = _kind(api_version, kind)
    return client().request("PATCH", found.path(namespace, name, "status"), query={"fieldManager": FIELD_MANAGER},
                     body={"status": status}, content_type="application/merge-patch+json")


def patch(api_version: str, kind: str, namespace: str, name: str, body: dict) -> dict:
    """JSON merge patch, for metadata the operator changes on objects it does not server-side apply."""
    found = _kind(api_version, kind)
    patched = client().request("PATCH", found.path(namespace, name), query={"fieldManager": FIELD_MANAGER},
                               body=body, content_type="application/merge-patch+json")
    view = _view()
    if view is not None:
        view.put(patched)
    return patched


def get_from_server(api_version: str, kind: str, namespace: str, name: str) -> dict | None:
    """A GET from the API server, past the watch cache: the object with its managedFields (the cache
    keeps none)."""
    with reading_from(None):
        return get(api_version, kind, namespace, name)


def read(api_version: str, kind: str, namespace: str, name: str) -> dict | None:
    """An object the watch cache need not hold (a Secret a TrackingServer references carries no
    label of ours): the cached copy when there is one, else a GET."""
    view = _view()
    hit = view.get(kind, namespace, name) if view is not None else None
    if hit is not None:
        return hit
    with reading_from(None):
        return get(api_version, kind, namespace, name)


# ---- reads from the watch cache ---------------------------------------------------------------------

INPUT_HASH_ANNOTATION = "mlflow-operator.dev/applied-hash"
MANAGED_BY = ("app.kubernetes.io/managed-by", "mlflow-operator")
INSTANCE_LABEL = "app.kubernetes.io/instance"


def input_hash(manifest: dict) -> str:
    """A digest of what is applied (the manifest without this annotation)."""
    annotations = {k: v for k, v in (manifest["metadata"].get("annotations") or {}).items() if k != INPUT_HASH_ANNOTATION}
    body = {**manifest, "metadata": {**manifest["metadata"], "annotations": annotations}}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def with_input_hash(manifest: dict) -> dict:
    meta = manifest["metadata"]
    annotations = {**(meta.get("annotations") or {}), INPUT_HASH_ANNOTATION: input_hash(manifest)}
    return {**manifest, "metadata": {**meta, "annotations": annotations}}


def _same_scalar(want: Any, have: Any) -> bool:
    if want == have:
        return True
    if isinstance(want, str) and isinstance(have, str):
        # The API server keeps quantities in canonical form ("1024Mi" is stored as "1Gi").
        try:
            parsed = parse_quantity(want)
            return parsed is not None and parsed == parse_quantity(have)
        except (ValueError, TypeError):
            return False
    return False


def contains(live: Any, want: Any) -> bool:
    """Every field of `want` has the same value in `live` (fields the API server adds are ignored)."""
    if want is None:
        return live is None
    if isinstance(want, dict):
        if not isinstance(live, dict):
            return not want and live is None
        return all(contains(live.get(k), v) for k, v in want.items() if not (v is None and k not in live))
    if isinstance(want, list):
        return isinstance(live, list) and len(live) >= len(want) and all(contains(l, w) for l, w in zip(live, want))
    return _same_scalar(want, live)


def up_to_date(desired: dict, live: dict) -> bool:
    """The live object was applied from this very manifest and nobody changed a field of it since."""
    annotations = live["metadata"].get("annotations") or {}
    if annotations.get(INPUT_HASH_ANNOTATION) != desired["metadata"]["annotations"][INPUT_HASH_ANNOTATION]:
        return False
    if live["metadata"].get("deletionTimestamp"):
        return False
    return contains(live.get("metadata"), desired["metadata"]) and all(
        contains(live.get(k), v) for k, v in desired.items() if k not in ("apiVersion", "kind", "metadata"))


def compact(body: dict) -> str:
    """What the watch cache keeps of a child: no managedFields (half of an object's size), as JSON
    text (a few kilobytes, where the same object as Python dicts takes ten times more)."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return json.dumps({**body, "metadata": meta}, separators=(",", ":"))


def _selector_labels(selector: str) -> dict[str, str] | None:
    """Equality-based selectors only (`a=b,c=d`); None for anything else."""
    labels = {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, sep, value = term.partition("=")
        if not sep or key.endswith(("!", "=")) or value.startswith("="):
            return None
        labels[key.strip()] = value.strip()
    return labels


class PassView:
    """The watch cache's children of one TrackingServer, as one pass sees them.

    The cache holds every object labelled managed-by=mlflow-operator of the kinds in `kinds` (Kopf
    indexes fed by watches with that server-side label selector), keyed by the instance label, so
    for these kinds it is the whole truth: an object it does not have is not ours. A pass's own
    writes update the view, so the steps after them read what they wrote."""

    def __init__(self, namespace: str, instance: str, kinds: set[str], objects: list[dict]):
        self.namespace, self.instance, self.kinds = namespace, instance, kinds
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in objects}

    def covers(self, kind: str, namespace: str | None) -> bool:
        # A cluster-scoped child is indexed under its TrackingServer's namespace label: the view
        # holds this TrackingServer's only, whatever namespace the caller passes.
        return kind in self.kinds and (namespace == self.namespace or kind in CLUSTER_SCOPED_KINDS)

    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        if not self.covers(kind, namespace):
            return None
        return self.objects.get((kind, name))

    def select(self, kind: str, selector: str) -> list[dict] | None:
        labels = _selector_labels(selector)
        if labels is None or labels.get(INSTANCE_LABEL) != self.instance:
            return None  # the cache cannot answer this selector: ask the API server
        return [o for (k, _), o in self.objects.items() if k == kind and all(
            (o["metadata"].get("labels") or {}).get(key) == value for key, value in labels.items())]

    def put(self, obj: dict) -> None:
        if obj.get("kind") in self.kinds:
            self.objects[(obj["kind"], obj["metadata"]["name"])] = obj

    def drop(self, kind: str, namespace: str, name: str) -> None:
        if self.covers(kind, namespace):
            self.objects.pop((kind, name), None)


def requests_made() -> int:
    """API requests this thread has made so far (a pass compares before and after)."""
    return getattr(_local, "requests", 0)


def _view() -> PassView | None:
    return getattr(_local, "view", None)


@contextlib.contextmanager
def reading_from(view: PassView | None) -> Iterator[None]:
    """Reads of cached kinds inside the block come from `view`, not from the API server."""
    previous = _view()
    _local.view = view
    try:
        yield
    finally:
        _local.view = previous
