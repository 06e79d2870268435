"""Generate the TrackingServer CRD from the pydantic models.

pydantic writes a JSON Schema; the API server wants a *structural* OpenAPI v3 schema: every node
typed, no $ref, no anyOf/oneOf (except the int-or-string idiom, written as
x-kubernetes-int-or-string), no `additionalProperties: true`. `structural()` rewrites one into the
other; `tests/unit/test_crd.py` checks the result with an independent structural checker and
checks that crds/ holds exactly what this module generates.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from . import yamlio
from .api import NAME_RULE, SPEC_RULES, TrackingServerClassSpec, TrackingServerSpec, TrackingServerStatus
from .constants import (
    CATEGORIES, CLASS_CRD_FILENAME, CLASS_CRD_NAME, CLASS_KIND, CLASS_PLURAL, CLASS_SHORT_NAMES, CLASS_SINGULAR,
    CRD_FILENAME, CRD_NAME, DEFAULT_CLASS_ANNOTATION, GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION,
)

# JSON-Schema keywords that OpenAPI v3 in a CRD accepts unchanged.
_KEPT = {
    "description", "type", "format", "enum", "default", "minimum", "maximum", "minLength",
    "maxLength", "pattern", "minItems", "maxItems", "minProperties", "maxProperties", "required",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-validations", "x-kubernetes-map-type",
}
_KUBERNETES_FORMATS = {"date-time", "int32", "int64", "byte"}


class SchemaError(ValueError):
    pass


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn one pydantic JSON-Schema node into a structural OpenAPI v3 node."""
    node = dict(node)
    # The field's own keywords (description, default, extras) win over the type's: merge the
    # raw nodes first, then convert once.
    if "$ref" in node:  # a nested model: inline it
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        return structural({**target, **node}, defs)
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in node:
            branches = [b for b in node.pop(combinator) if b != {"type": "null"}]
            if {b.get("type") for b in branches} == {"integer", "string"} and len(branches) == 2:
                return {"x-kubernetes-int-or-string": True, **structural(node, defs)}
            if len(branches) != 1:
                raise SchemaError(f"cannot express {combinator} of {branches} structurally")
            # Optional[X]: absent means unset. Explicit nulls are pruned by the API server
            # (no `nullable`), which is what the models accept too.
            return structural({**branches[0], **node}, defs)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: structural(prop, defs) for name, prop in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = structural(value, defs)
            # `true` (free-form dict) is expressed by x-kubernetes-preserve-unknown-fields instead
        elif key == "const":
            out["enum"] = [value]
        elif key == "format":
            if value in _KUBERNETES_FORMATS:
                out[key] = value
        elif key == "description":
            out[key] = " ".join(value.split())  # docstrings come with line breaks
        elif key == "default":
            if value is not None:
                out[key] = value
        elif key in _KEPT:
            out[key] = value
        # title, examples, ... are dropped
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        if not out.get("x-kubernetes-preserve-unknown-fields"):
            raise SchemaError(f"object without properties: {node}")
    return out


def model_schema(model: type) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return structural(raw, defs)


def unless_classed(validation: dict[str, Any]) -> dict[str, Any]:
    return {**validation, "rule": f"has(self.className) || ({validation['rule']})"}


def openapi_schema() -> dict[str, Any]:
    spec = model_schema(TrackingServerSpec)
    # No `default: {}` on spec itself: the API server checks a default against the rules as
    # written, without the nested defaults the rules rely on. A missing spec stays missing and
    # means the same as `spec: {}` (the models default it).
    # With a class, the spec is only the team's part: the rules across fields hold for the spec
    # the class and the team's part make together, which the operator checks (a condition).
    spec["x-kubernetes-validations"] = [unless_classed(rule.validation()) for rule in SPEC_RULES]
    status = model_schema(TrackingServerStatus)
    return {
        "type": "object",
        "description": "A TrackingServer runs one MLflow tracking server (metadata, artifacts, "
        "UI) for a team: the operator creates its Deployment(s), Services, volume, Secrets, "
        "migration Job, Ingress or HTTPRoute and policies, and reports what it observes in "
        "status. Try `mlflow-operator render -f <file>` to see exactly what it will create.",
        "properties": {
            "apiVersion": {"type": "string", "description": "mlflow-operator.dev/v1alpha1"},
            "kind": {"type": "string", "description": "TrackingServer"},
            # `name` is declared so that the name rule can report it as its field (fieldPath).
            "metadata": {
                "type": "object",
                "properties": {"name": {"type": "string", "description": "The TrackingServer's name."}},
            },
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [NAME_RULE.validation()],
    }


def partial(node: dict[str, Any]) -> dict[str, Any]:
    """A spec schema where every field is optional and nothing is defaulted: a class's `defaults`
    is a part of a spec, merged under the team's. Objects merge key by key, so along object
    properties `required`, `default` and the objects' own rules (which may read defaulted or
    required fields) go; lists and map values are replaced whole, so they keep every check."""
    out = {k: v for k, v in node.items() if k not in ("required", "default")}
    if "properties" in out:
        out.pop("x-kubernetes-validations", None)
        out["properties"] = {name: partial(prop) for name, prop in out["properties"].items()}
    return out


def class_openapi_schema() -> dict[str, Any]:
    spec = model_schema(TrackingServerClassSpec)
    defaults = partial(model_schema(TrackingServerSpec))
    defaults["properties"].pop("className")
    defaults["description"] = spec["properties"]["defaults"]["description"]
    spec["properties"]["defaults"] = defaults
    return {
        "type": "object",
        "description": "A TrackingServerClass is what a platform team decides once for many teams' "
        "tracking servers: spec defaults, fields teams may not change, each server's artifact "
        "destination and cloud identity, and its host name and exposure. A TrackingServer names "
        f"it in spec.className; the class annotated {DEFAULT_CLASS_ANNOTATION}=true serves those "
        "that name none. Try `mlflow-operator render -f <server> --class <class>`.",
        "properties": {
            "apiVersion": {"type": "string", "description": "mlflow-operator.dev/v1alpha1"},
            "kind": {"type": "string", "description": CLASS_KIND},
            "metadata": {"type": "object"},
            "spec": spec,
        },
    }


def _condition_column(name: str, condition: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status',
        "description": description,
    }


def custom_resource_definition() -> dict[str, Any]:
    return copy.deepcopy(_custom_resource_definition())


def class_custom_resource_definition() -> dict[str, Any]:
    return copy.deepcopy(_class_custom_resource_definition())


def trackingserver_schema() -> dict[str, Any]:
    """The CRD's schema, shared and read-only (callers must not change it)."""
    return _custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@functools.cache
def _class_custom_resource_definition() -> dict[str, Any]:
    escaped = DEFAULT_CLASS_ANNOTATION.replace(".", "\\.")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CLASS_CRD_NAME,
            "labels": {"app.kubernetes.io/name": "mlflow-operator", "app.kubernetes.io/part-of": "mlflow-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": CLASS_KIND,
                "listKind": f"{CLASS_KIND}List",
                "plural": CLASS_PLURAL,
                "singular": CLASS_SINGULAR,
                "shortNames": list(CLASS_SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": class_openapi_schema()},
                    "additionalPrinterColumns": [
                        {"name": "Default", "type": "string", "jsonPath": f".metadata.annotations.{escaped}",
                         "description": "Whether TrackingServers without spec.className get this class."},
                        {"name": "Artifacts", "type": "string", "jsonPath": ".spec.artifacts.destinationTemplate",
                         "description": "Each server's artifact destination."},
                        {"name": "Host", "type": "string", "jsonPath": ".spec.exposure.hostTemplate",
                         "description": "Each server's host name."},
                        {"name": "Enforced", "type": "string", "jsonPath": ".spec.enforced", "priority": 1,
                         "description": "Fields teams may not change."},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


@functools.cache
def _custom_resource_definition() -> dict[str, Any]:
    # Generating the schema takes pydantic a while; the models do not change at run time.
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "mlflow-operator", "app.kubernetes.io/part-of": "mlflow-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        _condition_column("Ready", "Ready", "Whether the server answers and is up to date."),
                        {"name": "URL", "type": "string", "jsonPath": ".status.url", "description": "Where clients reach the server."},
                        {"name": "Mode", "type": "string", "jsonPath": ".status.mode", "description": "Artifact serving mode."},
                        {"name": "Version", "type": "string", "jsonPath": ".status.mlflowVersion", "description": "MLflow version running."},
                        {"name": "Class", "type": "string", "jsonPath": ".status.className", "priority": 1,
                         "description": "The TrackingServerClass it runs with."},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


HEADER = "# Generated by `mlflow-operator crd --output crds/` from operator/mlflow_operator/api. Do not edit.\n"


def crd_yaml() -> str:
    """The CRD as written to crds/: sorted keys, so the file is stable and diffs are small."""
    return HEADER + yamlio.dump(custom_resource_definition(), sort_keys=True, width=100)


def class_crd_yaml() -> str:
    return HEADER + yamlio.dump(class_custom_resource_definition(), sort_keys=True, width=100)


def all_crds_yaml() -> str:
    return crd_yaml() + "---\n" + class_crd_yaml()


def write_crd(directory: Path) -> Path:
    """Writes both CRDs; returns the TrackingServer's."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CLASS_CRD_FILENAME).write_text(class_crd_yaml())
    path = directory / CRD_FILENAME
    path.write_text(crd_yaml())
    return path
