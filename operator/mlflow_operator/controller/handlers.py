"""Kopf registration: watch caches feed a work queue; a bounded pool of threads runs the passes.

The shape of a controller-runtime controller:
- Kopf watches TrackingServers, and their children through a server-side label selector
  (app.kubernetes.io/managed-by=mlflow-operator), and keeps the children in indexes keyed by their
  owner (namespace, instance label). Kopf calls no handler before every index has its initial
  listing, so the first pass after a (re)start sees the cluster as it is. Passes read children from
  these indexes and write only what differs (see kube.apply): a converged server costs no request.
- Events put a key in the queue: a TrackingServer seen for the first time or with a new
  generation, a child that changed or went away. The operator's own status writes do not.
- A key is queued at most once and in at most one pass at a time; `--workers` passes run at once.
  After a pass the key comes back after the resync period with jitter (so servers created at
  once do not stay in phase), sooner when the pass asks for it, with exponential backoff after a
  failure. At start-up the first passes are spread over a few seconds.
- No finalizer, but for one case: nothing has to run when a TrackingServer goes (garbage
  collection removes its owned children), so deleting one, or its namespace, never waits for the
  operator. The exception is a server whose class provisioned a database or MinIO user under
  retentionPolicy Delete: those live outside the cluster, and deprovision.py's finalizer drops them
  first. The finalizer earlier versions put on every TrackingServer is taken off.
Kopf's own bookkeeping would live in annotations with our prefix; with these handlers it keeps none.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import kopf

from ..api import InvalidTrackingServer, TrackingServerClass, load_trackingserverclass
from ..constants import API_VERSION, CLASS_PLURAL, GROUP, OWNER_NAMESPACE_LABEL, OWNER_UID_ANNOTATION, PLURAL, VERSION
from ..render import RenderContext
from ..render.classes import class_name_for
from . import kube, metrics, watch_streams
from .kube import ApiException
from .deprovision import FINALIZER as DEPROVISION_FINALIZER
from .reconcile import reconcile
from .workqueue import WorkQueue

LEGACY_FINALIZER = f"{GROUP}/finalizer"
MANAGED_SELECTOR = "=".join(kube.MANAGED_BY)
# Children kept in the watch cache: (group, version, plural, kind). Of Secrets, only the ones the
# operator generated (labelled managed-by) are watched; a Secret a TrackingServer references is
# read by name when a pass needs it: the cluster's Secrets are never streamed.
CACHED_CHILDREN = (
    ("", "v1", "secrets", "Secret"),
    # The server pods: their readiness and their `check` init container's result (the stores'
    # reachability and the MLflow version, seen from where the pods run) without a request.
    ("", "v1", "pods", "Pod"),
    ("apps", "v1", "deployments", "Deployment"),
    ("batch", "v1", "jobs", "Job"),
    ("", "v1", "services", "Service"),
    ("", "v1", "serviceaccounts", "ServiceAccount"),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    ("networking.k8s.io", "v1", "ingresses", "Ingress"),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    ("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute"),
    ("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor"),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding"),
)
CACHED_KINDS = {kind for *_, kind in CACHED_CHILDREN}
CACHED_RESOURCES = {(group, plural) for group, _, plural, _ in CACHED_CHILDREN}
DEBOUNCE_SECONDS = 0.3  # one pass for a burst of events
RESYNC_JITTER = 0.1  # each resync is 90-110 % of the period
STARTUP_SPREAD_SECONDS = 10.0  # the first passes after a start, spread over at most this long
MAX_BACKOFF_SECONDS = 300.0
# A status change that moves no condition's status or reason (a message, a replica count) waits
# this long after the server's last status write, to go out with the next one. A TrackingServer
# status patch costs the API server 15 ms of CPU (a ConfigMap's: 4); at N=500 a third of them,
# during an edit of all, only moved messages.
STATUS_HOLD_SECONDS = 5.0
LIST_CHUNK = 100  # objects per page of a watch's listing

Key = tuple[str, str]  # (namespace, name)


class CachedChild(NamedTuple):
    """A child as the watch cache keeps it: what identifies this version of it, and the object as
    compact JSON (decoded only by a pass that runs)."""

    identity: tuple[str, str, str | None]  # kind, name, resourceVersion
    text: str


log = logging.getLogger("mlflow_operator.reconcile")


@dataclass
class State:
    """What the handlers and the workers share (Kopf gives each object a shallow copy of the memo)."""

    resync: float
    workers: int
    render_base: RenderContext = field(default_factory=RenderContext)  # the operator's settings for rendering
    queue: WorkQueue = field(default_factory=WorkQueue)
    bodies: dict[Key, dict[str, Any]] = field(default_factory=dict)  # the latest body of each TrackingServer
    generations: dict[Key, Any] = field(default_factory=dict)  # the generation its last pass reconciled
    failures: dict[Key, int] = field(default_factory=dict)  # failed passes in a row
    # Key -> what the last pass read, when that pass wrote nothing and asked nothing of the API
    # server or the network: running it again on the same inputs would only repeat its result.
    settled: dict[Key, tuple] = field(default_factory=dict)
    status_written: dict[Key, float] = field(default_factory=dict)  # monotonic time of the last status write
    indexes: dict[str, Any] = field(default_factory=dict)  # kind -> Kopf's index of those children
    post_context: contextvars.Context | None = None  # Kopf's event poster, for kopf.event in threads
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # set once every index is populated
    settings: kopf.OperatorSettings | None = None  # for per-object loggers
    # TrackingServerClasses as last loaded, by name: (resourceVersion, model or None if invalid).
    classes: dict[str, tuple[str, TrackingServerClass | None]] = field(default_factory=dict)
    pool: concurrent.futures.ThreadPoolExecutor | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf builds a diff base for every watch event (a deep copy of the whole body, managedFields
    and all) for its change handlers. The operator has none (indexes, event handlers and its own
    work queue), so it builds and keeps none: a copy per event (a burst of them at convergence) for nothing."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.finalizer = LEGACY_FINALIZER
    # Our own events are explicit (kopf.event); log lines stay logs.
    settings.posting.level = logging.WARNING
    # Kopf's own requests and watches end too: a stream that goes silent (a half-open connection)
    # is re-opened instead of waited on forever.
    watch_timeout = int(memo.get("watch_timeout", 300))  # the API server wants whole seconds
    settings.watching.server_timeout = watch_timeout
    settings.watching.client_timeout = watch_timeout + 10
    settings.watching.inactivity_timeout = watch_timeout + 10
    settings.networking.request_timeout = memo.get("request_timeout", 30.0)
    settings.networking.connect_timeout = min(10.0, settings.networking.request_timeout / 3)
    settings.watching.connect_timeout = settings.networking.connect_timeout
    # The API server filters the children's watches: other controllers' objects never reach us.
    settings.watching.label_selectors[is_cached_child] = MANAGED_SELECTOR
    # Listings in pages: after a start every kind is listed at once, and a whole listing decoded at
    # once (500 pods: tens of MB as Python dicts) is what set the process's peak.
    settings.watching.chunk_size = LIST_CHUNK

    state = memo.state = State(resync=float(memo.get("resync", 60.0)), workers=int(memo.get("workers", 8)),
                               render_base=memo.get("render_base") or RenderContext(), settings=settings)
    state.pool = concurrent.futures.ThreadPoolExecutor(max_workers=state.workers, thread_name_prefix="reconcile")
    state.tasks = [asyncio.get_running_loop().create_task(_worker(state)) for _ in range(state.workers)]


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Kopf's watches and events with the credentials of the operator's own requests (credentials.py):
    one loader, so both reach the same API server as the same user. Kopf asks again after a 401,
    and the token file of a ServiceAccount is re-read then."""
    c = kube.client().credentials
    token = c.bearer_token(fresh=True)
    return kopf.ConnectionInfo(
        server=c.server, ca_path=c.ca_file, insecure=c.insecure or None, scheme="Bearer" if token else None,
        token=token, certificate_path=c.cert_file, private_key_path=c.key_file,
        username=None if token else c.username, password=None if token else c.password,
        default_namespace=c.namespace, expiration=c.token_expiry())  # an exec plugin's: Kopf logs in again before


@kopf.on.cleanup()
async def stop_workers(memo: kopf.Memo, **_: Any) -> None:
    state: State = memo.state
    for task in state.tasks:
        task.cancel()
    await asyncio.gather(*state.tasks, return_exceptions=True)
    state.pool.shutdown(wait=False, cancel_futures=True)


# ---- the watch cache ---------------------------------------------------------------------------------

def is_cached_child(resource: Any) -> bool:
    """A kind of CACHED_CHILDREN: watched by label, and reaching Kopf slimmed (watch_streams)."""
    return (getattr(resource, "group", None), getattr(resource, "plural", None)) in CACHED_RESOURCES


def cache_entry(kind: str, body: Mapping[str, Any]) -> dict[Key, CachedChild]:
    """A child's entry in the watch cache: under its owner's key, the compact text it arrived as
    (watch_streams slims it), or made from the whole object where it came unslimmed."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    owner = labels.get(kube.INSTANCE_LABEL)
    if not owner:
        return {}
    namespace = meta.get("namespace") or labels.get(OWNER_NAMESPACE_LABEL)  # cluster-scoped: see constants
    text = body.get(watch_streams.COMPACT_KEY) or kube.compact(dict(body))
    return {(namespace, owner): CachedChild((kind, meta.get("name"), meta.get("resourceVersion")), text)}


def _register_child_cache(group: str, version: str, plural: str, kind: str) -> None:
    index_id = f"children_{plural}"

    @kopf.index(group, version, plural, id=index_id)
    async def index_child(body: kopf.Body, **_: Any) -> dict[Key, CachedChild]:
        return cache_entry(kind, body)

    @kopf.on.event(group, version, plural, id=f"child_{plural}")
    async def child_changed(labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
        state: State = memo.state
        _remember_indexes(state, kwargs)
        namespace = namespace or labels.get(OWNER_NAMESPACE_LABEL)
        owner = labels.get(kube.INSTANCE_LABEL)
        if owner and (namespace, owner) in state.bodies:
            state.queue.add((namespace, owner), DEBOUNCE_SECONDS)


for _group, _version, _plural, _kind in CACHED_CHILDREN:
    _register_child_cache(_group, _version, _plural, _kind)


# ---- TrackingServerClasses --------------------------------------------------------------------------

@kopf.index(GROUP, VERSION, CLASS_PLURAL, id="trackingserverclasses")
async def index_class(body: kopf.Body, name: str, **_: Any) -> dict[str, str]:
    return {name: kube.compact(dict(body))}


@kopf.on.event(GROUP, VERSION, CLASS_PLURAL, id="trackingserverclass")
async def class_changed(event: kopf.RawEvent, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """A class changed or went: its servers (by spec.className or the default they got), and servers
    not reconciled yet (a new default), get a pass. The first listing after a start needs none:
    every server is queued by its own listing."""
    state: State = memo.state
    _remember_indexes(state, kwargs)
    if event["type"] is None:
        return
    for key, body in state.bodies.items():
        spec, status = body.get("spec") or {}, body.get("status") or {}
        if name in (spec.get("className"), status.get("className")) or (
                not spec.get("className") and status.get("observedGeneration") is None):
            state.queue.add(key, DEBOUNCE_SECONDS)


def _classes(state: State) -> dict[str, TrackingServerClass | None]:
    """The classes from the watch cache, each parsed once per resourceVersion (on the event loop)."""
    index = state.indexes.get("classes")
    if index is None:
        return {}
    out: dict[str, TrackingServerClass | None] = {}
    for name in list(index):
        for text in index.get(name, ()):
            raw = json.loads(text)
            version = raw["metadata"].get("resourceVersion")
            cached = state.classes.get(name)
            if cached is None or cached[0] != version:
                try:
                    cached = (version, load_trackingserverclass(raw))
                except InvalidTrackingServer:
                    cached = (version, None)  # only when the CRD's validation was bypassed
                state.classes[name] = cached
            out[name] = cached[1]
    for gone in set(state.classes) - set(out):
        del state.classes[gone]
    return out


def _remember_indexes(state: State, kwargs: dict[str, Any]) -> None:
    """Kopf hands indexes to handlers only: the workers keep the references the first handler gets."""
    if not state.ready.is_set():
        state.indexes["classes"] = kwargs["trackingserverclasses"]
        for _, _, plural, kind in CACHED_CHILDREN:
            state.indexes[kind] = kwargs[f"children_{plural}"]
        state.post_context = contextvars.copy_context()
        state.ready.set()


def _cached_children(state: State, key: Key) -> list[CachedChild]:
    """The cached children of one TrackingServer (on the event loop: the indexes change there)."""
    return [child for kind, index in state.indexes.items() if kind != "classes" for child in index.get(key, ())]


# ---- TrackingServers ------------------------------------------------------------------------------

@kopf.on.event(GROUP, VERSION, PLURAL)
async def trackingserver_event(event: kopf.RawEvent, body: kopf.Body, name: str, namespace: str,
                               memo: kopf.Memo, logger: logging.Logger, **kwargs: Any) -> None:
    state: State = memo.state
    _remember_indexes(state, kwargs)
    key = (namespace, name)
    if event["type"] == "DELETED":
        await _delete_cluster_scoped_children(state, key, body)
        state.bodies.pop(key, None)
        state.generations.pop(key, None)
        state.failures.pop(key, None)
        state.settled.pop(key, None)
        state.status_written.pop(key, None)
        state.queue.forget(key)
        metrics.forget(namespace, name)
        return
    raw = dict(body)
    state.bodies[key] = raw
    if LEGACY_FINALIZER in (raw["metadata"].get("finalizers") or []):
        await _drop_legacy_finalizer(raw, logger)
    if raw["metadata"].get("deletionTimestamp") and DEPROVISION_FINALIZER in (raw["metadata"].get("finalizers") or []):
        state.queue.add(key, DEBOUNCE_SECONDS, intent=True)  # what its class provisioned is dropped before it goes
    elif state.generations.get(key) != raw["metadata"].get("generation"):
        # A new generation, or a server this process has not reconciled yet. The first listing
        # after a start (event type None) is spread out, so a restart is no burst.
        listing = event["type"] is None
        spread = min(STARTUP_SPREAD_SECONDS, state.resync) if listing else 0.0
        # A new generation goes ahead of passes that only observe (the work queue's intent).
        state.queue.add(key, random.uniform(0.0, spread) if spread else DEBOUNCE_SECONDS, intent=not listing)


async def _delete_cluster_scoped_children(state: State, key: Key, body: kopf.Body) -> None:
    """Garbage collection does not follow a namespaced owner to a cluster-scoped child (Kubernetes
    auth's ClusterRoleBinding), so the operator deletes it when its TrackingServer goes. A
    TrackingServer deleted while no operator runs leaves its binding behind (it grants reviews
    only), until a TrackingServer of that name and namespace takes it over or someone deletes it."""
    uid = (body.get("metadata") or {}).get("uid")
    if not uid or not state.ready.is_set():
        return
    for found in [k for k in kube.KINDS.values() if not k.namespaced]:
        kind = found.kind
        for cached in state.indexes.get(kind, {}).get(key, ()):
            child = json.loads(cached.text)
            meta = child["metadata"]
            if (meta.get("annotations") or {}).get(OWNER_UID_ANNOTATION) != uid:
                continue
            try:
                await asyncio.get_running_loop().run_in_executor(
                    state.pool, lambda: kube.delete(found.api_version, kind, None, meta["name"], uid=meta.get("uid")))
            except ApiException as exc:
                log.warning("could not delete %s %s of the deleted TrackingServer %s/%s: %s",
                            kind, meta["name"], key[0], key[1], kube.error_message(exc))


async def _drop_legacy_finalizer(raw: dict[str, Any], logger: logging.Logger) -> None:
    meta = raw["metadata"]
    remaining = [f for f in meta.get("finalizers") or [] if f != LEGACY_FINALIZER]
    try:
        # resourceVersion makes the patch conditional: a concurrent change of finalizers wins.
        await asyncio.to_thread(kube.patch, API_VERSION, "TrackingServer", meta["namespace"], meta["name"],
                                {"metadata": {"finalizers": remaining or None, "resourceVersion": meta["resourceVersion"]}})
        logger.info("removed the finalizer %s (no longer needed)", LEGACY_FINALIZER)
    except ApiException as exc:
        if exc.status not in (404, 409):
            logger.warning("could not remove the finalizer %s: %s", LEGACY_FINALIZER, kube.error_message(exc))


# ---- workers ----------------------------------------------------------------------------------------

async def _worker(state: State) -> None:
    await state.ready.wait()
    loop = asyncio.get_running_loop()
    while True:
        key = await state.queue.get()
        next_in: float | None = None
        try:
            body = state.bodies.get(key)
            if body is None:
                continue  # deleted meanwhile
            cached = _cached_children(state, key)
            classes = _classes(state)
            class_name = class_name_for(body, [c for c in classes.values() if c is not None])
            class_input = ((class_name, state.classes.get(class_name, (None,))[0]),)
            inputs = _inputs(body, cached) + class_input
            if state.settled.get(key) == inputs:
                # A resync of a converged server whose inputs are all watched: nothing to do, no CPU
                # spent (not even decoding its children).
                next_in = state.resync * random.uniform(1 - RESYNC_JITTER, 1 + RESYNC_JITTER)
                continue
            state.settled.pop(key, None)
            children = [json.loads(child.text) for child in cached]
            view = kube.PassView(key[0], key[1], CACHED_KINDS, children)
            next_in, written, settled = await loop.run_in_executor(
                state.pool, state.post_context.copy().run, _pass, body, view, state, classes)
            if written is not None and state.bodies.get(key) is body:
                state.bodies[key] = written  # until the watch brings it: no second identical write
            if settled:
                # After its own status write the server's resourceVersion is the written one: the
                # watch brings that body back, and its first resync then costs nothing either.
                state.settled[key] = inputs if written is None else _inputs(written, cached) + class_input
            state.generations[key] = body["metadata"].get("generation")
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - never lose a worker
            log.exception("reconcile worker error for %s/%s", *key)
            next_in = state.resync
        finally:
            state.queue.done(key, next_in)


def _inputs(body: dict[str, Any], children: list[CachedChild]) -> tuple:
    """What a pass reads from the watches: the TrackingServer and its children, by resourceVersion."""
    return (body["metadata"].get("resourceVersion"), tuple(sorted(child.identity for child in children)))


def _pass(body: dict[str, Any], view: kube.PassView, state: State,
          classes: dict[str, TrackingServerClass | None] | None = None) -> tuple[float, dict[str, Any] | None, bool]:
    """One pass, in a worker thread. Returns when to come back, the body after a status write, and
    whether the pass was settled: it read only the watch cache and wrote nothing but its status.
    Such a pass run again on its own status is a no-op (conditions merge to themselves, nothing
    differs to apply), so the resync after it is skipped like one after a pass that wrote nothing."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    key = (namespace, name)
    resync = state.resync * random.uniform(1 - RESYNC_JITTER, 1 + RESYNC_JITTER)
    # Log lines carry the object (JSON: "object"; text: a [namespace/name] prefix); none is posted
    # as an event: events are posted explicitly (kopf.event).
    logger = kopf.LocalObjectLogger(body=kopf.Body(body), settings=state.settings)
    try:
        before = kube.requests_made()
        hold_until = state.status_written.get(key, -STATUS_HOLD_SECONDS) + STATUS_HOLD_SECONDS
        with metrics.timed_reconcile(namespace, name), kube.deadline(), kube.reading_from(view):
            result, written = run_pass(body, state.render_base, logger, classes or {}, hold_until=hold_until)
        if written is not None:
            state.status_written[key] = time.monotonic()
        state.failures.pop(key, None)
        made = kube.requests_made() - before
        settled = made == (0 if written is None else 1) and not result.requeue_after
        if result.requeue_after:
            return min(resync, result.requeue_after), written, False
        return resync, written, settled
    except InvalidTrackingServer as exc:
        # Only reachable when the CRD's validation was bypassed (an old CRD): say so, do nothing.
        kopf.warn(body, reason="InvalidSpec", message=str(exc))
        logger.error("invalid TrackingServer: %s", exc)
        return resync, None, False
    except ApiException as exc:
        # A cause in the cluster (the API server refused, timed out or is unreachable): no traceback.
        failures = state.failures[key] = state.failures.get(key, 0) + 1
        delay = _backoff(failures, resync)
        logger.warning("reconcile interrupted (attempt %d), retrying in %.0f s: %s %s: %s",
                       failures, delay, exc.status, exc.reason, kube.error_message(exc))
        return delay, None, False
    except Exception as exc:  # noqa: BLE001 - a bug of ours: keep serving the others, retry with backoff
        failures = state.failures[key] = state.failures.get(key, 0) + 1
        delay = _backoff(failures, resync)
        logger.exception("reconcile failed (attempt %d), retrying in %.0f s: %s", failures, delay, exc)
        return delay, None, False


def _backoff(failures: int, resync: float) -> float:
    return min(resync, MAX_BACKOFF_SECONDS, 2.0 ** min(failures, 8)) * random.uniform(0.9, 1.1)


def only_details_moved(current: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a status change moves no condition's status, reason or observedGeneration and no
    field but the replica counts: it announces nothing (events follow reasons) and can wait."""
    if set(current) != set(new) or any(current[k] != new[k] for k in current if k not in DETAIL_FIELDS):
        return False

    def essence(status: dict[str, Any]) -> dict[str, tuple]:
        return {c["type"]: (c.get("status"), c.get("reason"), c.get("observedGeneration")) for c in status.get("conditions") or []}

    return essence(current) == essence(new)


DETAIL_FIELDS = {"conditions", "replicas", "readyReplicas"}


def run_pass(body: dict[str, Any], render_base: RenderContext | None = None,
             logger: logging.Logger | logging.LoggerAdapter = log,
             classes: dict[str, TrackingServerClass | None] | None = None, hold_until: float | None = None):
    """One pass and its status write. A change of details only (`only_details_moved`) before
    `hold_until` (monotonic) is not written: the pass comes back then, or sooner on an event."""
    def emit(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)
        (logger.warning if type_ == "Warning" else logger.info)("%s: %s", reason, message)

    result = reconcile(body, emit, render_base=render_base or RenderContext(), classes=classes or {})
    current = body.get("status") or {}
    written = None
    changed = [k for k, v in result.status.items() if current.get(k) != v]
    now = time.monotonic()
    if changed and hold_until is not None and now < hold_until and only_details_moved(current, result.status):
        result.requeue_after = min(result.requeue_after or hold_until - now, hold_until - now)
        changed = []
    if changed:
        if logger.isEnabledFor(logging.DEBUG):  # which conditions moved, for "why does it write?"
            old = {c["type"]: c for c in current.get("conditions") or []}
            diff = [(c["type"], old.get(c["type"], {}).get("status"), c["status"], c.get("reason")) for c in result.status["conditions"]
                    if {k: v for k, v in old.get(c["type"], {}).items() if k != "lastTransitionTime"} != {k: v for k, v in c.items() if k != "lastTransitionTime"}]
            logger.debug("status changed: %s %s", [k for k in changed if k != "conditions"], diff)
        written = kube.patch_status(API_VERSION, "TrackingServer", body["metadata"]["namespace"],
                                    body["metadata"]["name"], result.status)
    ready = next((c for c in result.status["conditions"] if c["type"] == "Ready"), {})
    metrics.READY.labels(body["metadata"]["namespace"], body["metadata"]["name"]).set(1 if ready.get("status") == "True" else 0)
    return result, written
