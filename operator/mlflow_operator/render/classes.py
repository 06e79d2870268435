"""A TrackingServer and its TrackingServerClass make one spec (pure: objects in, object out).

Layers, lowest first: the built-in defaults, the class's `defaults`, what the class derives per
server (artifact destination, ServiceAccount annotations, Ingress or HTTPRoute), the team's spec.
Objects merge key by key; lists and values are replaced whole. An `enforced` field takes the
class's layers only: a team's different value is reported, never applied.

The API server writes the built-in defaults into every stored spec, so "the team left it out"
and "the team wrote the built-in default" look the same. A team value equal to the built-in
default therefore does not override a class default: to run with the built-in value under a
class that sets another, the class must not set it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..api.trackingserverclass import TrackingServerClass
from ..constants import DEFAULT_CLASS_ANNOTATION


@dataclass(frozen=True)
class ClassResult:
    """The TrackingServer as the operator runs it, and what the class did to it."""

    body: dict[str, Any]  # the TrackingServer with the effective spec
    class_name: str | None
    overridden: list[str] = field(default_factory=list)  # enforced fields the team set differently


def strip_builtin_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """The parts of a stored spec that differ from what the API server defaults them to."""
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    out = {}
    for key, item in value.items():
        prop = schema["properties"].get(key)
        if prop is None:
            out[key] = item
            continue
        stripped = strip_builtin_defaults(item, prop)
        if "default" in prop and stripped == prop["default"]:
            continue
        if stripped == {} and prop.get("default") == {}:
            continue
        out[key] = stripped
    return out


def deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


def fill(template: str, namespace: str, name: str) -> str:
    return template.replace("{namespace}", namespace).replace("{name}", name)


def database_secret_name(name: str) -> str:
    """The Secret with a provisioned server's database URIs, in the team's namespace."""
    return f"{name}-database"


def artifacts_secret_name(name: str) -> str:
    """The Secret with a provisioned server's MinIO keys, in the team's namespace."""
    return f"{name}-s3"


def derived(cls: TrackingServerClass, namespace: str, name: str) -> dict[str, Any]:
    """What the class gives this one server: destination, identity, host."""
    out: dict[str, Any] = {}
    spec = cls.spec
    if spec.artifacts:
        out["artifacts"] = {"destination": fill(spec.artifacts.destination_template, namespace, name)}
        minio = spec.artifacts.minio
        if minio:
            keys = artifacts_secret_name(name)
            out["artifacts"]["s3"] = {
                "endpointUrl": minio.endpoint_url.rstrip("/"),
                **({"region": minio.region} if minio.region else {}),
                "accessKeyId": {"secretKeyRef": {"name": keys, "key": "access-key-id"}},
                "secretAccessKey": {"secretKeyRef": {"name": keys, "key": "secret-access-key"}},
            }
        if spec.artifacts.service_account_annotations:
            out["serviceAccount"] = {"annotations": {
                k: fill(v, namespace, name) for k, v in spec.artifacts.service_account_annotations.items()}}
    if spec.database:
        out["backendStore"] = {"type": "Database", "uri": {"secretKeyRef": {"name": database_secret_name(name), "key": "uri"}}}
    exposure = spec.exposure
    if exposure:
        host = fill(exposure.host_template, namespace, name)
        if exposure.gateway_parent_refs:
            out["gateway"] = {"parentRefs": [p.dump() for p in exposure.gateway_parent_refs],
                              "hostnames": [host], "tls": exposure.tls}
        else:
            ingress: dict[str, Any] = {"hosts": [host]}
            if exposure.ingress_class_name:
                ingress["className"] = exposure.ingress_class_name
            if exposure.tls:
                ingress["tlsSecretName"] = f"{name}-tls"
            if exposure.annotations:
                ingress["annotations"] = dict(exposure.annotations)
            out["ingress"] = ingress
    return out


def apply_class(body: Mapping[str, Any], cls: TrackingServerClass, spec_schema: Mapping[str, Any]) -> ClassResult:
    """The TrackingServer `body` (as stored: built-in defaults filled in) under `cls`."""
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace") or "default", meta.get("name", "")
    team = strip_builtin_defaults(copy.deepcopy(body.get("spec") or {}), spec_schema)
    class_layer = deep_merge(cls.spec.defaults or {}, derived(cls, namespace, name))
    overridden = []
    for enforced in cls.spec.enforced or ():
        if enforced in team:
            ours = class_layer.get(enforced)
            if deep_merge(ours, team[enforced]) != ours:
                overridden.append(enforced)
            del team[enforced]
    team.pop("className", None)  # the spec that runs is whole: the rules across fields apply to it
    spec = deep_merge(class_layer, team)
    auth = spec.get("auth") or {}
    if cls.spec.database and auth.get("type") == "Basic" and "databaseUri" not in auth:
        # The auth database is provisioned beside the tracking one: several replicas can share it.
        spec["auth"] = {**auth, "databaseUri": {"secretKeyRef": {"name": database_secret_name(name), "key": "auth-uri"}}}
    out = {k: v for k, v in body.items() if k != "spec"}
    out["spec"] = spec
    return ClassResult(out, cls.name, overridden)


def default_class(classes: Iterable[TrackingServerClass]) -> TrackingServerClass | None:
    """The class annotated as the default; of several, the newest (as Kubernetes picks among
    default StorageClasses), then the first by name."""
    marked = [c for c in classes if (c.metadata.annotations or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"]
    if not marked:
        return None
    marked.sort(key=lambda c: c.metadata.name)
    marked.sort(key=lambda c: str((c.metadata.model_extra or {}).get("creationTimestamp") or ""), reverse=True)
    return marked[0]


def class_name_for(body: Mapping[str, Any], classes: Iterable[TrackingServerClass]) -> str | None:
    """The class a TrackingServer runs with: its spec.className; else the default class it was
    first reconciled with (status.className); else, for a server never reconciled, today's
    default class. A server reconciled without a class keeps none when a default appears later:
    marking a class the default does not change running servers."""
    named = (body.get("spec") or {}).get("className")
    if named:
        return named
    status = body.get("status") or {}
    if status.get("className"):
        return status["className"]
    if status.get("observedGeneration") is not None:
        return None
    default = default_class(classes)
    return default.name if default else None
