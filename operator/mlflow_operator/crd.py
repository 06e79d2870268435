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
from .api import NAME_RULE, SPEC_RULES, TrackingServerSpec, TrackingServerStatus
from .constants import CATEGORIES, CRD_FILENAME, CRD_NAME, GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION

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


def openapi_schema() -> dict[str, Any]:
    spec = model_schema(TrackingServerSpec)
    # No `default: {}` on spec itself: the API server checks a default against the rules as
    # written, without the nested defaults the rules rely on. A missing spec stays missing and
    # means the same as `spec: {}` (the models default it).
    spec["x-kubernetes-validations"] = [rule.validation() for rule in SPEC_RULES]
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


def _condition_column(name: str, condition: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status',
        "description": description,
    }


def custom_resource_definition() -> dict[str, Any]:
    return copy.deepcopy(_custom_resource_definition())


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
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as written to crds/: sorted keys, so the file is stable and diffs are small."""
    header = "# Generated by `mlflow-operator crd --output crds/` from operator/mlflow_operator/api. Do not edit.\n"
    return header + yamlio.dump(custom_resource_definition(), sort_keys=True, width=100)


def write_crd(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CRD_FILENAME
    path.write_text(crd_yaml())
    return path
