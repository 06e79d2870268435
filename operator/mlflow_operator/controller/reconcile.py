"""One reconcile pass of a TrackingServer: an ordered list of small steps.

1. Generated Secrets and the volume claim exist (created once, never overwritten), and their owner
   references follow retentionPolicy as it is now (ownership.py).
2. Every Secret the pods reference exists with its keys; their data is hashed into the pod template.
3. The ServiceAccount the migration Job's pod runs as is applied.
4. Migrations gate the rollout: the migration Job for this image and database must have succeeded
   before anything else is applied. Until then every other child (Deployments, Services, Ingress,
   NetworkPolicy, budgets) stays as the old version serves with, and a PodDisruptionBudget keeps
   its pods from eviction. A rollback below the migrated schema is refused (migrations.py).
5. Then everything is applied (server-side apply, one field manager, owner references) and
   children that the spec no longer asks for are deleted.
6. Status is computed from what the children say now, not from what this pass did.

Every step is idempotent: a pass can stop anywhere (error, restart) and the next one carries on.
"""
from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable


from ..api import InvalidTrackingServer, TrackingServer, load_trackingserver
from ..api import derived as d
from ..constants import OWNER_NAMESPACE_LABEL
from ..render import RenderContext, client_url, fresh_secret_values, migration_guard, render, required_generated_secrets, secret_data_hash
from ..render import naming
from ..api import TrackingServerClass
from ..crd import trackingserver_schema
from ..render.classes import apply_class, class_name_for
from . import kube, metrics
from .kube import ApiException
from .conditions import Condition, find, keep_only, merge_conditions
from .dataplace import data_in_place
from .deprovision import finalize, has_finalizer, set_finalizer, wants_finalizer
from .migrations import MigrationGate, gate_migrations
from .provisioning import ARTIFACTS_PROVISIONED, DATABASE_PROVISIONED, ProvisioningBlocked, ensure_artifacts, ensure_database
from .observe import NOT_POD_PROBLEMS, PODS_STARTING, observe
from .ownership import delete_owned, reconcile_retention
from .volumes import ensure_volume_claim

log = logging.getLogger(__name__)

# Kinds the operator prunes when the spec stops asking for them. Secrets and volumes are never
# pruned: they hold data (retention is decided by ownership, see render/storage.py); Jobs are
# handled by the migration step.
PRUNABLE_KINDS = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
)
WORKLOAD_KINDS = {"Deployment", "Job"}
CREATE_ONLY_KINDS = {"Secret", "PersistentVolumeClaim"}

NOT_READY_RECHECK_SECONDS = 10

EventFn = Callable[[str, str, str], None]  # (type: Normal|Warning, reason, message)


class Blocked(Exception):
    """The pass cannot go on until something outside the spec changes (a Secret appears, ...)."""

    def __init__(self, condition: Condition):
        super().__init__(condition.message)
        self.condition = condition


@dataclass
class PassResult:
    status: dict[str, Any]
    requeue_after: float | None = None
    notes: list[str] = field(default_factory=list)


def load(body: dict[str, Any]) -> TrackingServer:
    # status is the operator's own output; it never decides what to render.
    return load_trackingserver({k: v for k, v in body.items() if k != "status"})


# ---- step 1 and 2: Secrets -------------------------------------------------------------------

def ensure_generated_secrets(ts: TrackingServer) -> dict[str, dict[str, str]]:
    """Fresh values only for generated Secrets that do not exist yet; existing ones are kept."""
    fresh = {}
    for secret in required_generated_secrets(ts):
        if kube.get("v1", "Secret", ts.namespace, secret.name) is None:
            fresh[secret.name] = fresh_secret_values(secret)
    return fresh


def secret_key_refs(manifests: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Secret name -> keys, for every secretKeyRef and secret volume of every pod template."""
    refs: dict[str, set[str]] = {}
    for m in manifests:
        pod = m.get("spec", {}).get("template", {}).get("spec")
        if not pod:
            continue
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    refs.setdefault(ref["name"], set()).add(ref["key"])
        for v in pod.get("volumes", []):
            if "secret" in v:
                keys = {item["key"] for item in v["secret"].get("items", [])}
                refs.setdefault(v["secret"]["secretName"], set()).update(keys)
    return refs


class SecretReader:
    """The Secrets one pass reads, each read once. Rendering (the hashes in the pod templates and
    the migration Job's name) and the store conditions then see the same data: a Secret edited during
    a pass cannot make status report a database the rendered children do not use yet."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self._read: dict[str, dict[str, bytes] | None] = {}

    def data(self, name: str) -> dict[str, bytes] | None:
        if name not in self._read:
            secret = kube.read("v1", "Secret", self.namespace, name)  # a user's Secret is not in the cache
            self._read[name] = (
                None if secret is None
                else {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
            )
        return self._read[name]

    def value(self, name: str, key: str) -> str | None:
        raw = (self.data(name) or {}).get(key)
        return raw.decode() if raw is not None else None


def read_referenced_secrets(refs: dict[str, set[str]], fresh: dict[str, Any], secrets: SecretReader) -> dict[str, str]:
    """Hashes of referenced Secrets' data; Blocked when one is missing or lacks a key."""
    hashes, problems = {}, []
    for name, keys in sorted(refs.items()):
        if name in fresh:
            continue  # created in this pass; the renderer hashes it from its values
        data = secrets.data(name)
        if data is None:
            problems.append(f"Secret {name} not found")
            continue
        missing = sorted(keys - set(data))
        if missing:
            problems.append(f"Secret {name} has no key {', '.join(missing)}")
            continue
        hashes[name] = secret_data_hash(data)
    if problems:
        raise Blocked(Condition("Reconciled", False, "SecretNotFound", "; ".join(problems)))
    return hashes


# ---- step 3 and 5: apply and prune ------------------------------------------------------------

def data_bearing(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] in CREATE_ONLY_KINDS]


def migration_prerequisites(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the migration Job's pod needs before it can start: its ServiceAccount."""
    return [m for m in manifests if m["kind"] == "ServiceAccount"]


# Applied before the migration gate, whatever it says.
HELD_BACK_NEVER = CREATE_ONLY_KINDS | {"ServiceAccount"}


def apply_children(manifests: list[dict[str, Any]]) -> list[Condition]:
    """Applies everything but workloads, each only when it differs from the cached child (see
    kube.apply_if_changed). A kind the cluster does not serve (Gateway API or ServiceMonitor CRDs
    not installed) is skipped and reported, not an error that blocks the rest."""
    problems, conditions = [], []
    for manifest in manifests:
        kind = manifest["kind"]
        if kind in WORKLOAD_KINDS:
            continue
        if kube.resource(manifest["apiVersion"], kind) is None:
            problems.append(f"{kind} {manifest['metadata']['name']} not created: the cluster does not serve "
                            f"{manifest['apiVersion']} (install its CRDs)")
            continue
        if kind == "PersistentVolumeClaim":
            # Volumes hold data and are immutable but for growing: see volumes.py.
            condition = ensure_volume_claim(manifest)
            if condition:
                conditions.append(condition)
            continue
        if kind in CREATE_ONLY_KINDS:
            # Generated Secrets hold random values, never overwritten.
            if kube.get(manifest["apiVersion"], kind, manifest["metadata"]["namespace"], manifest["metadata"]["name"]) is None:
                kube.create(manifest)
            continue
        if kube.apply_if_changed(manifest)[1]:
            metrics.APPLIED_OBJECTS.labels(kind).inc()
    if problems:
        conditions.append(Condition("Reconciled", False, "CRDNotInstalled", "; ".join(problems)))
    return conditions


REPLICAS_HANDOVER_MANAGER = "mlflow-operator-replicas-handover"


def _applies_replicas(live: dict[str, Any]) -> bool:
    for entry in live["metadata"].get("managedFields") or []:
        if entry.get("manager") == kube.FIELD_MANAGER and entry.get("operation") == "Apply":
            if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
                return True
    return False


def hand_over_replicas(manifest: dict[str, Any]) -> None:
    """A Deployment rendered without `replicas` (an HPA scales it now): if the operator's apply still
    owns the field, dropping it from the apply would reset the Deployment to 1 replica. A second field
    manager first takes the current count (the documented ownership transfer), so the field outlives
    the operator's apply at its current value, until the HPA changes it."""
    if "replicas" in manifest["spec"]:
        return
    meta = manifest["metadata"]
    # managedFields: the watch cache keeps none, so this one read goes to the API server.
    live = kube.get_from_server(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
    if live is None or not _applies_replicas(live):
        return
    kube.apply({"apiVersion": manifest["apiVersion"], "kind": manifest["kind"],
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                "spec": {"replicas": live["spec"].get("replicas", 1)}}, field_manager=REPLICAS_HANDOVER_MANAGER)


def prune(ts: TrackingServer, manifests: list[dict[str, Any]]) -> list[str]:
    """Deletes owned children of prunable kinds that are not in the rendered list. In the operator the
    lists come from the watch cache (kube.PassView): a prune that finds nothing costs no request."""
    wanted = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    selector = f"app.kubernetes.io/instance={ts.name},app.kubernetes.io/managed-by=mlflow-operator"
    deleted = []
    for api_version, kind in PRUNABLE_KINDS:
        # A cluster-scoped child names its TrackingServer's namespace in a label (see constants).
        scoped = f"{selector},{OWNER_NAMESPACE_LABEL}={ts.namespace}" if kind in kube.CLUSTER_SCOPED_KINDS else selector
        for obj in kube.list_objects(api_version, kind, ts.namespace, scoped):
            meta = obj["metadata"]
            if (kind, meta["name"]) not in wanted and delete_owned(ts, api_version, kind, obj):
                deleted.append(f"{kind}/{meta['name']}")
    return deleted


# ---- the pass ---------------------------------------------------------------------------------

# ---- step 0: the class ----------------------------------------------------------------------

CLASS_APPLIED = "ClassApplied"


def _class_hold(body: dict[str, Any], class_name: str, condition: Condition) -> PassResult:
    """The class cannot be applied: nothing is touched (the server keeps running as it was), and
    its ClassApplied condition says why. Every other condition stays as last observed."""
    generation = body["metadata"].get("generation", 0)
    status = dict(body.get("status") or {})
    conditions = merge_conditions(status.get("conditions") or [], [condition], generation)
    status.update(conditions=conditions, className=class_name)
    return PassResult(status=status, requeue_after=60)


def with_class(body: dict[str, Any], classes: dict[str, TrackingServerClass | None]
               ) -> tuple[dict[str, Any], str | None, Condition | None, PassResult | None]:
    """The TrackingServer as it runs under its class, the class's name, its ClassApplied
    condition, and, when the class cannot be applied, the pass's result instead."""
    class_name = class_name_for(body, [c for c in classes.values() if c is not None])
    if class_name is None:
        return body, None, None, None
    cls = classes.get(class_name)
    if class_name not in classes:
        return body, class_name, None, _class_hold(body, class_name, Condition(
            CLASS_APPLIED, False, "ClassNotFound",
            f"TrackingServerClass {class_name} does not exist: the server keeps running as last applied; "
            "create the class or set spec.className to another one"))
    if cls is None:
        return body, class_name, None, _class_hold(body, class_name, Condition(
            CLASS_APPLIED, False, "ClassInvalid", f"TrackingServerClass {class_name} is invalid (see `mlflow-operator "
            "render --class`): the server keeps running as last applied"))
    result = apply_class(body, cls, trackingserver_schema()["properties"]["spec"])
    try:
        load(result.body)
    except InvalidTrackingServer as exc:
        return body, class_name, None, _class_hold(body, class_name, Condition(
            CLASS_APPLIED, False, "InvalidWithClass",
            f"the spec with TrackingServerClass {class_name} cannot work, nothing was applied: {exc}".replace("\n", "; ")))
    if result.overridden:
        fields = ", ".join(f"spec.{f}" for f in result.overridden)
        condition = Condition(CLASS_APPLIED, False, "EnforcedFieldsIgnored",
                              f"{fields}: enforced by TrackingServerClass {class_name}; the class's value applies")
    else:
        condition = Condition(CLASS_APPLIED, True, "Applied", f"TrackingServerClass {class_name} applied")
    return result.body, class_name, condition, None


def reconcile(body: dict[str, Any], emit: EventFn,
              render_base: RenderContext = RenderContext(),
              classes: dict[str, TrackingServerClass | None] | None = None) -> PassResult:
    """One pass. Returns the status to write; raises only for unexpected API errors.
    `render_base` carries the operator's settings (default image, cluster domain); `classes` the
    TrackingServerClasses from the watch cache."""
    if body["metadata"].get("deletionTimestamp") and has_finalizer(body):
        # Deleted, and its class provisioned something under retentionPolicy Delete: drop it, then
        # let the deletion finish (deprovision.py). Nothing is applied to a server going away.
        class_name = class_name_for(body, [c for c in (classes or {}).values() if c is not None])
        status, requeue = finalize(body, (classes or {}).get(class_name) if class_name else None, class_name, load, emit)
        return PassResult(status=status, requeue_after=requeue)
    body, class_name, class_condition, held = with_class(body, classes or {})
    if held is not None:
        announce_transitions((body.get("status") or {}).get("conditions") or [], held.status["conditions"], emit)
        return held
    ts = load(body)
    cls = (classes or {}).get(class_name) if class_name else None
    provisions = cls is not None and cls.spec.database is not None
    provisions_artifacts = cls is not None and cls.spec.artifacts is not None and cls.spec.artifacts.minio is not None
    provisioned = provisioned_artifacts = None
    generation = body["metadata"].get("generation", 0)
    previous = (body.get("status") or {}).get("conditions") or []
    observed: list[Condition] = [class_condition] if class_condition else []
    gate: MigrationGate | None = None
    requeue = None
    manifests: list[dict[str, Any]] = []
    secrets = SecretReader(ts.namespace)
    try:
        if provisions or provisions_artifacts or has_finalizer(body):
            # Before anything is provisioned: what is made under Delete is always dropped with the server.
            set_finalizer(body, wants_finalizer(ts, cls))
        if provisions:
            try:
                condition, provisioned = ensure_database(ts, cls)
            except ProvisioningBlocked as blocked:
                raise Blocked(blocked.condition) from None
            observed.append(condition)
        if provisions_artifacts:
            try:
                condition, provisioned_artifacts = ensure_artifacts(ts, cls)
            except ProvisioningBlocked as blocked:
                raise Blocked(blocked.condition) from None
            observed.append(condition)
        fresh = ensure_generated_secrets(ts)
        refs = secret_key_refs(render(ts, replace(render_base, generated_secrets=fresh)))
        hashes = read_referenced_secrets(refs, fresh, secrets)
        manifests = render(ts, replace(render_base, generated_secrets=fresh, secret_hashes=hashes))
        for name in fresh:
            emit("Normal", "SecretGenerated", f"Generated Secret {name} (kept across restarts and re-creation)")
        # Data first, and its retention before anything that can fail: a policy change must reach
        # the volume and generated Secrets even when another child cannot be applied.
        observed += apply_children(data_bearing(manifests))
        observed.append(reconcile_retention(ts))
        observed.append(data_in_place(manifests, previous, generation))
        observed += apply_children(migration_prerequisites(manifests))
        gate = gate_migrations(ts, manifests, emit)
        requeue = gate.requeue_after
        if gate.open:
            observed += apply_children([m for m in manifests if m["kind"] not in HELD_BACK_NEVER])
            for manifest in manifests:
                if manifest["kind"] == "Deployment":
                    hand_over_replicas(manifest)
                    if kube.apply_if_changed(manifest)[1]:
                        metrics.APPLIED_OBJECTS.labels("Deployment").inc()
            for gone in prune(ts, manifests):
                emit("Normal", "Pruned", f"Deleted {gone}: the spec no longer asks for it")
        else:
            # The whole desired state waits: Services, Ingress, NetworkPolicy, budgets and pruning
            # follow the new spec only together with the Deployments, so the previous version keeps
            # serving exactly as it did. Its pods are kept from eviction meanwhile; a refused
            # rollback leaves the current version serving on its own schema, nothing to guard.
            guard = migration_guard(ts)
            if gate.state != "Refused":
                apply_children([guard])
            else:
                live = kube.get(guard["apiVersion"], guard["kind"], ts.namespace, guard["metadata"]["name"])
                if live:
                    delete_owned(ts, guard["apiVersion"], guard["kind"], live)
            observed.append(Condition("Reconciled", True, "WaitingForMigration",
                                      "the volume, generated Secrets and ServiceAccount follow the spec; the other "
                                      "children keep the previous version until the migration succeeds"))
        if not any(c.type == "Reconciled" for c in observed):
            observed.append(Condition("Reconciled", True, "Applied", f"{len(manifests)} children applied"))
    except Blocked as blocked:
        observed.append(blocked.condition)
        requeue = 30
    except InvalidTrackingServer:
        raise
    except kube.ChildRejected as rejected:
        # Retried slowly: only a spec change (a new generation, handled at once) or a changed
        # admission policy can make it pass.
        observed.append(Condition("Reconciled", False, "ChildRejected", str(rejected)))
        requeue = 60
    except ApiException as exc:
        observed.append(Condition("Reconciled", False, "ApiError", f"{exc.status} {exc.reason}: {kube.error_message(exc)}"))
        requeue = 15

    observation = observe(ts, gate, secrets.value)
    observed += observation.conditions
    if pods_not_ready(observation.conditions):
        # The pods are watched (their changes queue a pass), but a container in back-off changes
        # nothing the watch sees for minutes: while pods are not ready, look again soon.
        requeue = min(requeue or NOT_READY_RECHECK_SECONDS, NOT_READY_RECHECK_SECONDS)
    conditions = keep_only(merge_conditions(previous, observed, generation),
                           producible_conditions(ts) | ({CLASS_APPLIED} if class_name else set())
                           | ({DATABASE_PROVISIONED} if provisions else set())
                           | ({ARTIFACTS_PROVISIONED} if provisions_artifacts else set()))
    conditions = merge_conditions(conditions, [summarize(conditions)], generation)
    announce_transitions(previous, conditions, emit)
    status = {
        "observedGeneration": generation,
        "conditions": conditions,
        "url": client_url(ts),
        "mode": ts.spec.artifacts.mode,
        "selector": naming.status_selector(ts),
        **observation.fields,
    }
    if class_name:
        status["className"] = class_name
    if provisioned:
        status["database"] = provisioned
    if provisioned_artifacts:
        status["artifacts"] = provisioned_artifacts
    return PassResult(status=status, requeue_after=requeue)


ALWAYS_PRODUCED = {"Ready", "Available", "Progressing", "Degraded", "Reconciled", "MigrationsApplied",
                   "BackendReachable", "ArtifactStoreReachable", "DataRetained", "DataInPlace"}


def producible_conditions(ts: TrackingServer) -> set[str]:
    types = set(ALWAYS_PRODUCED)
    if d.needs_volume(ts.spec):
        types.add("VolumeResized")
    return types


def pods_not_ready(conditions: list[Condition]) -> bool:
    """A Deployment exists whose pods are starting or stuck (observe.py's reasons)."""
    for c in conditions:
        if c.type == "Available" and c.status is False and c.reason not in ("WaitingForMigrations", "DeploymentMissing", "ScaledToZero"):
            return True
        if c.type == "Degraded" and c.reason == "SomePodsNotReady":
            return True
    return False


SUMMARIZED = ("Reconciled", "MigrationsApplied", "Available", "BackendReachable", "ArtifactStoreReachable")


def summarize(conditions: list[dict[str, Any]]) -> Condition:
    """Ready: the server is up, on the current spec, and can reach its stores."""
    for type_ in SUMMARIZED:
        cond = find(conditions, type_)
        if cond is None:
            return Condition("Ready", None, "Pending", f"{type_} not observed yet")
        if cond["status"] != "True":
            return Condition("Ready", False, cond["reason"], f"{type_}: {cond['message']}")
    progressing = find(conditions, "Progressing")
    # Pods of a rolled-out Deployment that are starting (a replica restarting) leave Ready as
    # Available says; a spec change or a migration in progress does not.
    if progressing and progressing["status"] == "True" and progressing["reason"] != PODS_STARTING:
        return Condition("Ready", False, "RollingOut", progressing["message"])
    return Condition("Ready", True, "Ready", find(conditions, "Available")["message"])


WARN_WHEN_FALSE = ("Reconciled", "MigrationsApplied", "BackendReachable", "ArtifactStoreReachable", "DataInPlace",
                   CLASS_APPLIED, DATABASE_PROVISIONED, ARTIFACTS_PROVISIONED)


def announce_transitions(previous: list[dict[str, Any]], current: list[dict[str, Any]], emit: EventFn) -> None:
    """An event per condition change that a person must see in `kubectl describe`."""
    for cond in current:
        old = find(previous, cond["type"])
        if old and old.get("status") == cond["status"] and old.get("reason") == cond["reason"]:
            continue
        if cond["type"] in WARN_WHEN_FALSE and cond["status"] == "False":
            emit("Warning", cond["reason"], f"{cond['type']}: {cond['message']}")
        elif cond["type"] == "Available" and cond["status"] == "False" and cond["reason"] not in NOT_POD_PROBLEMS:
            # Unschedulable, ErrImagePull, CrashLoopBackOff...: once per problem, not per back-off flip.
            if not (old and old.get("status") == "False" and same_problem(old.get("reason"), cond["reason"])):
                emit("Warning", cond["reason"], f"Available: {cond['message']}")
        elif cond["type"] == "Ready" and cond["status"] == "True":
            emit("Normal", "Ready", cond["message"])


# The kubelet alternates these while an image cannot be pulled: one problem, one event.
_PROBLEM_FAMILY = {"ImagePullBackOff": "ErrImagePull"}


def same_problem(old: str | None, new: str) -> bool:
    return _PROBLEM_FAMILY.get(old or "", old) == _PROBLEM_FAMILY.get(new, new)
