"""Kopf registration: thin handlers around `reconcile`.

One daemon per TrackingServer runs the reconcile passes one after another, so two passes of the same
object never overlap. It wakes up when the spec changes (a new generation), when a child changes or is
deleted (Deployment status, a Job finishing, a hand edit), when a referenced Secret changes, and at the
latest every `resync` seconds (drift, reachability). Kopf's own bookkeeping lives in annotations with
our prefix, never in status, which is the operator's observation alone.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from ..api import InvalidTrackingServer
from ..constants import GROUP, PLURAL, VERSION
from ..render import RenderContext, render
from . import kube, metrics
from .reconcile import load, reconcile, secret_key_refs
from .stores import probe_stores

MANAGED = {"app.kubernetes.io/managed-by": "mlflow-operator"}
# Children whose changes wake their owner's reconcile loop.
WATCHED_CHILDREN = (
    ("apps", "v1", "deployments"),
    ("batch", "v1", "jobs"),
    ("", "v1", "services"),
    ("", "v1", "serviceaccounts"),
    ("networking.k8s.io", "v1", "ingresses"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("gateway.networking.k8s.io", "v1", "httproutes"),
)
DEBOUNCE_SECONDS = 0.3


def _triggers(memo: Any) -> dict[tuple[str, str], asyncio.Event]:
    # Kopf hands each object a shallow copy of the operator's memo: the dicts made at start-up are shared.
    return memo.triggers


def wake(memo: Any, namespace: str, name: str) -> None:
    event = _triggers(memo).get((namespace, name))
    if event is not None:
        event.set()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Our own events are explicit (kopf.event); log lines stay logs.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30
    memo.triggers = {}
    memo.generations = {}
    if "resync" not in memo:
        memo.resync = 60.0
    if "render_base" not in memo:
        memo.render_base = RenderContext()


# On deletion Kopf sets `stopped`; the loop wakes up at once and exits, and is cancelled only if a
# pass is still running after the backoff (a cancelled daemon logs "... is cancelled. Will escalate.").
@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_backoff=30.0, cancellation_timeout=10.0)
async def keep_reconciled(body: kopf.Body, name: str, namespace: str, stopped: kopf.DaemonStopped,
                          memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    trigger = _triggers(memo).setdefault((namespace, name), asyncio.Event())
    failures = 0
    try:
        while not stopped:
            trigger.clear()
            snapshot = dict(body)  # the live body, frozen for this pass
            delay = memo.resync
            try:
                with metrics.timed_reconcile(namespace, name):
                    result = await asyncio.to_thread(run_pass, snapshot, logger, memo.render_base)
                failures = 0
                if result is not None and result.requeue_after:
                    delay = min(delay, result.requeue_after)
            except InvalidTrackingServer as exc:
                # Only reachable when the CRD's validation was bypassed (an old CRD): say so, do nothing.
                kopf.warn(snapshot, reason="InvalidSpec", message=str(exc))
                logger.error("invalid TrackingServer: %s", exc)
            except Exception as exc:  # noqa: BLE001 - keep the loop alive; retried with backoff
                failures += 1
                delay = min(delay, 2.0 ** min(failures, 6))
                logger.exception("reconcile failed (attempt %d), retrying in %.0f s: %s", failures, delay, exc)
            memo.generations[(namespace, name)] = snapshot["metadata"].get("generation")
            if await _woken(trigger, stopped, delay) and not stopped:
                await asyncio.sleep(DEBOUNCE_SECONDS)  # one pass for a burst of events
    finally:
        _triggers(memo).pop((namespace, name), None)
        memo.generations.pop((namespace, name), None)
        metrics.forget(namespace, name)


async def _woken(trigger: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> bool:
    """Sleeps until an event, the daemon's stop or the timeout; True when an event woke it."""
    woken = asyncio.ensure_future(trigger.wait())
    stopping = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({woken, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (woken, stopping):
            task.cancel()
    return trigger.is_set()


def run_pass(body: dict[str, Any], logger: logging.Logger, render_base: RenderContext | None = None):
    def emit(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)
        # k8s_skip: the event is posted above; Kopf's log poster would post a Warning a second time.
        (logger.warning if type_ == "Warning" else logger.info)("%s: %s", reason, message, extra={"k8s_skip": True})

    result = reconcile(body, emit, probes=probe_stores, render_base=render_base or RenderContext())
    current = body.get("status") or {}
    if any(current.get(k) != v for k, v in result.status.items()):
        kube.patch_status(f"{GROUP}/{VERSION}", "TrackingServer", body["metadata"]["namespace"], body["metadata"]["name"], result.status)
    ready = next((c for c in result.status["conditions"] if c["type"] == "Ready"), {})
    metrics.READY.labels(body["metadata"]["namespace"], body["metadata"]["name"]).set(1 if ready.get("status") == "True" else 0)
    return result


@kopf.on.event(GROUP, VERSION, PLURAL)
def trackingserver_changed(body: kopf.Body, name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """A new generation (spec change) wakes the loop; our own status writes do not."""
    if memo.generations.get((namespace, name)) != body["metadata"].get("generation"):
        wake(memo, namespace, name)


def _owner_name(body: kopf.Body) -> str | None:
    for ref in body["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "TrackingServer" and ref.get("apiVersion", "").startswith(GROUP + "/"):
            return ref.get("name")
    return None


def _register_child_watch(group: str, version: str, plural: str) -> None:
    @kopf.on.event(group, version, plural, labels=MANAGED, id=f"child-{plural}")
    def child_changed(body: kopf.Body, namespace: str, memo: kopf.Memo, **_: Any) -> None:
        owner = _owner_name(body)
        if owner:
            wake(memo, namespace, owner)


for _group, _version, _plural in WATCHED_CHILDREN:
    _register_child_watch(_group, _version, _plural)


@kopf.index(GROUP, VERSION, PLURAL)
def secret_users(body: kopf.Body, name: str, namespace: str, **_: Any) -> dict[tuple[str, str], str]:
    """(namespace, Secret name) -> the TrackingServers whose pods read that Secret."""
    try:
        refs = secret_key_refs(render(load(dict(body))))
    except InvalidTrackingServer:
        return {}
    return {(namespace, secret): name for secret in refs}


@kopf.on.event("", "v1", "secrets")
def secret_changed(name: str, namespace: str, secret_users: kopf.Index, memo: kopf.Memo, **_: Any) -> None:
    """A referenced Secret's new data rolls the pods (its hash is in the pod template)."""
    for owner in secret_users.get((namespace, name), []):
        wake(memo, namespace, owner)
