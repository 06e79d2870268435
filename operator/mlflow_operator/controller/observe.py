"""Status from observation: what the Deployments, their pods and the pods' store checks say now."""
from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..api import TrackingServer
from ..api import derived as d
from ..render import naming
from . import kube, stores
from .conditions import Condition
from .migrations import MigrationGate
from .podmessages import entrypoint_message, mask_uri_passwords


@dataclass
class Observation:
    conditions: list[Condition]
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rollout:
    """One Deployment's state, in numbers."""

    name: str
    exists: bool
    desired: int = 0
    ready: int = 0
    available: int = 0
    updated: int = 0
    total: int = 0
    current_generation: bool = True
    deadline_exceeded: bool = False
    version: str | None = None
    problem: PodProblem | None = None  # why a pod is not ready, when its containers tell

    @property
    def rolled_out(self) -> bool:
        return self.exists and self.current_generation and self.updated >= self.desired and self.total <= self.desired

    def describe(self, component: str) -> str:
        return f"{self.ready}/{self.desired} {component} pods ready"


@dataclass(frozen=True)
class PodProblem:
    reason: str  # the kubelet's CamelCase reason: CrashLoopBackOff, ImagePullBackOff, Unschedulable, ...
    message: str


# Progressing=True while rolled-out pods are still starting (no stuck container): not a spec change.
PODS_STARTING = "PodsStarting"
# Available reasons that are no pod problem (any other reason False is the kubelet's or scheduler's).
NOT_POD_PROBLEMS = {"WaitingForMigrations", "DeploymentMissing", "ScaledToZero", "NoPodReady", "MinimumReplicasAvailable"}
# Waiting reasons of a container that is simply starting, not stuck.
_STARTING = {"ContainerCreating", "PodInitializing"}
MESSAGE_LIMIT = 400


def _last_lines(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """The end of a termination message (the entrypoint's last log lines): the reason is there."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    out = ""
    for line in reversed(lines):
        candidate = f"{line} | {out}" if out else line
        if len(candidate) > limit:
            break
        out = candidate
    return out or text.strip()[-limit:]


def pod_problem(pods: list[dict[str, Any]]) -> PodProblem | None:
    """The first reason, newest pod first, that a pod of a Deployment is not serving: a container
    waiting for something other than its start (CrashLoopBackOff, ImagePullBackOff,
    CreateContainerConfigError, ...) with its last exit and termination message, an init
    container that failed, or a pod the scheduler cannot place. None when nothing is stuck."""
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True):
        status = pod.get("status") or {}
        for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            state, last = cs.get("state") or {}, (cs.get("lastState") or {}).get("terminated")
            waiting, terminated = state.get("waiting"), state.get("terminated")
            if waiting and waiting.get("reason") not in _STARTING:
                head = f"container {cs['name']} of pod {pod['metadata']['name']}: {waiting.get('reason')}"
                if last:
                    head += f" (last exit code {last.get('exitCode')})"
                # The kubelet's waiting message is its own; a termination message is the container's.
                detail = entrypoint_message((last or {}).get("message")) or mask_uri_passwords(waiting.get("message") or "")
                return PodProblem(waiting.get("reason") or "Waiting", head + (f": {_last_lines(detail)}" if detail.strip() else ""))
            if terminated and terminated.get("exitCode") not in (0, None) and status.get("phase") != "Succeeded":
                detail = _last_lines(entrypoint_message(terminated.get("message")) or terminated.get("reason") or "")
                return PodProblem("ContainerFailed", f"container {cs['name']} of pod {pod['metadata']['name']} "
                                  f"exited with code {terminated.get('exitCode')}" + (f": {detail}" if detail else ""))
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return PodProblem(cond.get("reason") or "Unschedulable",
                                  f"pod {pod['metadata']['name']}: {_last_lines(cond.get('message') or 'not scheduled')}")
    return None


def rollout_of(deployment: dict[str, Any] | None, name: str) -> Rollout:
    if deployment is None:
        return Rollout(name, exists=False)
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing") or {}
    return Rollout(
        name=name,
        exists=True,
        desired=spec.get("replicas", 1),
        ready=status.get("readyReplicas") or 0,
        available=status.get("availableReplicas") or 0,
        updated=status.get("updatedReplicas") or 0,
        total=status.get("replicas") or 0,
        current_generation=(status.get("observedGeneration") or 0) >= deployment["metadata"].get("generation", 0),
        deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
        version=(((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/version"),
    )


def claim_problem(claim: dict[str, Any] | None, events: list[dict[str, Any]]) -> str | None:
    """Why a claim is not bound, in the PV controller's or provisioner's words (the newest event on
    the claim, e.g. FailedBinding "no persistent volumes available for this claim and no storage
    class is set", which Kubernetes posts as a Normal event): the scheduler only says that the pod
    "has unbound immediate PersistentVolumeClaims"."""
    if claim is None or (claim.get("status") or {}).get("phase") == "Bound":
        return None
    name = claim["metadata"]["name"]
    told = [e for e in events if e.get("message")]
    if not told:
        return f"PersistentVolumeClaim {name} is {(claim.get('status') or {}).get('phase') or 'Pending'}"
    newest = max(told, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or
                 (e.get("metadata") or {}).get("creationTimestamp") or "")
    return f"PersistentVolumeClaim {name}: {newest.get('reason')}: {_last_lines(newest['message'])}"


# Events are not watched: a claim's are LISTed at most this often (one claim, all its passes).
CLAIM_EVENTS_SECONDS = 30.0
# A claim younger than this is being bound as usual, and the scheduler marks its pod Unschedulable
# meanwhile: the pod is starting, not stuck. No Warning, no Unschedulable in status, no LIST of the
# claim's events yet (at N=500: 493 Warnings, a status write each, and most of 912 LISTs).
CLAIM_PATIENCE_SECONDS = 10.0
_claim_events: dict[tuple[str, str], tuple[float, list[dict[str, Any]]]] = {}
_claim_events_lock = threading.Lock()


def claim_events(namespace: str, name: str, claim: dict[str, Any] | None,
                 now: float | None = None, fetch: Callable[[], list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """The events of a claim that is not bound, read at most once per CLAIM_EVENTS_SECONDS. None
    asked for a claim that is Bound or gone: a pod the scheduler marked Unschedulable before its claim was
    bound keeps that condition until it is scheduled, and asking then is a wasted LIST (at N=500
    ~2,700 of them during convergence, when every pass over such a pod asked)."""
    key = (namespace, name)
    if claim is None or (claim.get("status") or {}).get("phase") == "Bound":
        with _claim_events_lock:
            _claim_events.pop(key, None)
        return []
    now = time.monotonic() if now is None else now
    with _claim_events_lock:
        hit = _claim_events.get(key)
    if hit and now - hit[0] < CLAIM_EVENTS_SECONDS:
        return hit[1]
    events = (fetch or (lambda: kube.list_objects(
        "v1", "Event", namespace, "", field_selector=f"involvedObject.kind=PersistentVolumeClaim,involvedObject.name={name}")))()
    with _claim_events_lock:
        for stale in [k for k, (at, _) in _claim_events.items() if now - at >= CLAIM_EVENTS_SECONDS]:
            del _claim_events[stale]  # claims no pass asks about any more (their server deleted)
        _claim_events[key] = (now, events)
    return events


def claim_being_bound(claim: dict[str, Any] | None, wall: float | None = None) -> bool:
    """A claim not bound yet, younger than CLAIM_PATIENCE_SECONDS by the wall clock."""
    if claim is None or (claim.get("status") or {}).get("phase") == "Bound":
        return False
    created = (claim.get("metadata") or {}).get("creationTimestamp")
    try:
        born = datetime.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp() if created else None
    except ValueError:
        born = None
    return born is not None and (time.time() if wall is None else wall) - born < CLAIM_PATIENCE_SECONDS


def _claims_of_problem_pod(ts: TrackingServer, problem: PodProblem) -> PodProblem | None:
    """The claim's reason added to an Unschedulable pod's; None while the pod only waits for a claim
    that is being bound (the pass comes back while pods are not ready, and says so if it lasts)."""
    if not d.needs_volume(ts.spec):
        return problem
    name = naming.volume_claim_name(ts)
    claim = kube.get("v1", "PersistentVolumeClaim", ts.namespace, name)
    if "PersistentVolumeClaim" in problem.message and claim_being_bound(claim):
        return None
    detail = claim_problem(claim, claim_events(ts.namespace, name, claim))
    return replace(problem, message=f"{problem.message}; {detail}") if detail else problem


def observe_rollout(ts: TrackingServer, component: str, name: str) -> tuple[Rollout, list[dict[str, Any]]]:
    """One Deployment's rollout and the pods of its current pod template. Pods come from the watch
    cache (labelled managed-by, like every child): reading them costs no request."""
    deployment = kube.get("apps/v1", "Deployment", ts.namespace, name)
    rollout = rollout_of(deployment, name)
    selector = ",".join(f"{k}={v}" for k, v in naming.selector_labels(ts, component).items())
    pods = kube.list_objects("v1", "Pod", ts.namespace, selector) if rollout.exists else []
    if rollout.exists and rollout.ready < rollout.desired:
        problem = pod_problem(pods)
        if problem and problem.reason == "Unschedulable":
            problem = _claims_of_problem_pod(ts, problem)
        if problem:
            rollout = replace(rollout, problem=problem)
    return rollout, stores.current_pods(deployment, pods)


def observe(ts: TrackingServer, gate: MigrationGate | None, secret_value: Callable[[str, str], str | None]) -> Observation:
    tracking, tracking_pods = observe_rollout(ts, naming.TRACKING, naming.tracking_name(ts))
    rollouts = {naming.TRACKING: tracking}
    artifact_pods, artifact_deployment = tracking_pods, tracking.name
    if ts.spec.artifacts.mode == "Split":
        rollouts[naming.ARTIFACTS], artifact_pods = observe_rollout(ts, naming.ARTIFACTS, naming.artifacts_name(ts))
        artifact_deployment = naming.artifacts_name(ts)
    conditions = [availability(rollouts, gate), progressing(rollouts, gate), degraded(rollouts, gate)]
    if gate is not None:
        conditions.append(gate.condition)
    conditions.append(stores.backend_condition(ts, secret_value, tracking.name, tracking_pods))
    conditions.append(stores.artifact_condition(ts, artifact_deployment, artifact_pods))

    fields: dict[str, Any] = {"replicas": tracking.total, "readyReplicas": tracking.ready}
    # What serves now: the version the ready pods of the current pod template reported from their
    # image (held back while a migration runs or failed, so it can lag the spec). Pods whose image
    # reports none (kwok's fakes) leave the image tag, once the rollout is complete.
    version = stores.reported_version(tracking_pods)
    if version is None and tracking.rolled_out and tracking.ready:
        version = tracking.version
    if version:
        fields["mlflowVersion"] = version
    return Observation(conditions, fields)


def availability(rollouts: dict[str, Rollout], gate: MigrationGate | None) -> Condition:
    missing = [r for r in rollouts.values() if not r.exists]
    if missing:
        if gate is not None and not gate.open:
            return Condition("Available", False, "WaitingForMigrations", f"Deployment {missing[0].name} is created once migrations succeed")
        return Condition("Available", False, "DeploymentMissing", f"Deployment {missing[0].name} does not exist yet")
    message = ", ".join(r.describe(component) for component, r in rollouts.items())
    if all(r.available >= 1 for r in rollouts.values()):
        return Condition("Available", True, "MinimumReplicasAvailable", message)
    if all(r.desired == 0 for r in rollouts.values()):
        return Condition("Available", False, "ScaledToZero", message)
    stuck = next((r for r in rollouts.values() if r.available < 1 and r.problem), None)
    if stuck:
        return Condition("Available", False, stuck.problem.reason, f"{message}; {stuck.problem.message}")
    return Condition("Available", False, "NoPodReady", message)


def progressing(rollouts: dict[str, Rollout], gate: MigrationGate | None) -> Condition:
    """True while the servers move toward the spec; Complete only once every Deployment exists, is
    rolled out and has all its pods ready; False with the reason when pods are stuck."""
    if gate is not None and gate.state in ("Running", "Waiting"):
        return Condition("Progressing", True, "MigrationRunning", gate.condition.message)
    missing = [r for r in rollouts.values() if not r.exists]
    if missing:
        if gate is not None and gate.state == "Failed":
            return Condition("Progressing", False, "MigrationFailed", f"Deployment {missing[0].name} is created once "
                             f"migrations succeed: {gate.condition.message}")
        return Condition("Progressing", True, "Creating", f"Deployment {missing[0].name} does not exist yet")
    rolling = [r for r in rollouts.values() if not r.rolled_out]
    if rolling:
        r = rolling[0]
        return Condition("Progressing", True, "RollingOut", f"Deployment {r.name}: {r.updated}/{r.desired} pods updated, {r.ready} ready")
    for r in rollouts.values():
        if r.ready < r.desired:
            message = f"Deployment {r.name}: {r.ready}/{r.desired} pods ready"
            if r.problem:
                return Condition("Progressing", False, r.problem.reason, f"{message}; {r.problem.message}")
            if r.deadline_exceeded:
                return Condition("Progressing", False, "ProgressDeadlineExceeded", message)
            return Condition("Progressing", True, PODS_STARTING, message)
    return Condition("Progressing", False, "Complete", "every Deployment is rolled out and its pods are ready")


def degraded(rollouts: dict[str, Rollout], gate: MigrationGate | None) -> Condition:
    if gate is not None and gate.state in ("Failed", "Refused"):
        return Condition("Degraded", True, gate.condition.reason, gate.condition.message)
    for r in rollouts.values():
        if r.deadline_exceeded:
            return Condition("Degraded", True, "ProgressDeadlineExceeded", f"Deployment {r.name} did not roll out in time")
        if r.exists and r.rolled_out and r.ready < r.desired:
            detail = f"; {r.problem.message}" if r.problem else ""
            return Condition("Degraded", True, "SomePodsNotReady", f"Deployment {r.name}: {r.ready}/{r.desired} pods ready{detail}")
    return Condition("Degraded", False, "AsExpected", "nothing is degraded")
