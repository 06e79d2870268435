"""A ValidatingAdmissionPolicy (paramKind TrackingServerClass) that refuses, at `kubectl apply`, a
TrackingServer setting a field its class enforces.

The API server writes the built-in defaults into a spec before admission, so "the team left it
out" is "the field has its built-in default value": each enforceable field F gets one validation,
`F is absent or at its built-in default`, which applies only when the server runs with the class
the policy is evaluated with (the binding selects every class: its spec.className, the class it
was first reconciled with, or for a new server without className a class marked the default) and
the class lists F in `enforced`.
An UPDATE that leaves F as it was is let through (ratcheting): a class that starts enforcing a
field does not freeze servers that set it earlier; the operator reports those (ClassApplied,
EnforcedFieldsIgnored) and runs them with the class's value.

Generated (`mlflow-operator crd`) into the chart as templates/enforced-fields-policy.yaml; a unit
test fails when it drifts.
"""
from __future__ import annotations

import copy
import json
from typing import Any

import yaml

from .api.trackingserverclass import ENFORCEABLE
from .constants import API_VERSION, DEFAULT_CLASS_ANNOTATION, GROUP, PLURAL, VERSION
from .crd import trackingserver_schema

CHART_TEMPLATE = "enforced-fields-policy.yaml"


def _defaulted(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: absent properties get their default, recursively."""
    if isinstance(value, dict):
        for name, prop in schema.get("properties", {}).items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                _defaulted(prop, value[name])
    return value


def builtin_defaults() -> dict[str, Any]:
    """Each top-level spec field as the API server stores it when the team leaves it out."""
    return _defaulted(trackingserver_schema()["properties"]["spec"], {})


def _literal(value: Any) -> str:
    """A CEL literal of a JSON value. A CEL map or list literal must have one value type: each
    value is dyn(...), so {"enabled": false, "interval": "30s"} compiles."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: dyn({_literal(v)})" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(f"dyn({_literal(v)})" for v in value) + "]"
    return json.dumps(value)


# The class a server runs with, as the operator decides it (render/classes.class_name_for): its
# spec.className; else the class it was first reconciled with (status.className), or none if it
# was reconciled without one; else, for a new server, a class marked the default.
OF_THIS_CLASS = (
    "has(object.spec.className) ? object.spec.className == params.metadata.name : "
    "(oldObject != null && has(oldObject.status) && has(oldObject.status.observedGeneration)) ? "
    "(has(oldObject.status.className) && oldObject.status.className == params.metadata.name) : "
    f"(has(params.metadata.annotations) && '{DEFAULT_CLASS_ANNOTATION}' in params.metadata.annotations && "
    f"params.metadata.annotations['{DEFAULT_CLASS_ANNOTATION}'] == 'true')"
)


def validations() -> list[dict[str, str]]:
    defaults = builtin_defaults()
    out = []
    for field in ENFORCEABLE:
        enforced = f"has(params.spec.enforced) && '{field}' in params.spec.enforced"
        left_out = f"!has(object.spec.{field})"
        if field in defaults:
            # dyn: the checker types object.spec.<field> from the CRD's schema, the literal is a map
            left_out += f" || dyn(object.spec.{field}) == dyn({_literal(defaults[field])})"
        unchanged = f"(oldObject != null && has(oldObject.spec.{field}) && has(object.spec.{field}) && oldObject.spec.{field} == object.spec.{field})"
        out.append({
            "expression": f"!({OF_THIS_CLASS}) || !({enforced}) || {left_out} || {unchanged}",
            "messageExpression": f'"spec.{field} is enforced by TrackingServerClass " + params.metadata.name + '
                                 '": leave it out, the class\'s value applies"',
            "reason": "Forbidden",
        })
    return out


def chart_template() -> str:
    """The chart's template: the policy and its binding (every class is a parameter)."""
    policy = {
        "failurePolicy": "Fail",
        "paramKind": {"apiVersion": API_VERSION, "kind": "TrackingServerClass"},
        "matchConstraints": {"resourceRules": [{"apiGroups": [GROUP], "apiVersions": [VERSION],
                                                "operations": ["CREATE", "UPDATE"], "resources": [PLURAL]}]},
        "validations": validations(),
    }
    binding = {
        "paramRef": {"selector": {}, "parameterNotFoundAction": "Allow"},
        "validationActions": ["Deny"],
    }
    indent = lambda value: "  " + yaml.safe_dump(value, sort_keys=False, width=10_000).rstrip().replace("\n", "\n  ")
    return "\n".join([
        "# Generated by `mlflow-operator crd` (operator/mlflow_operator/admission.py): do not edit.",
        "# Refuses a TrackingServer that sets a field its TrackingServerClass enforces (an update leaving",
        "# such a field as it was passes, and the operator reports it).",
        "{{- if .Values.enforcedFieldsPolicy }}",
        "apiVersion: admissionregistration.k8s.io/v1",
        "kind: ValidatingAdmissionPolicy",
        "metadata:",
        '  name: {{ include "mlflow-operator.fullname" . }}-enforced-fields',
        '  labels: {{- include "mlflow-operator.labels" . | nindent 4 }}',
        "spec:",
        indent(policy),
        "---",
        "apiVersion: admissionregistration.k8s.io/v1",
        "kind: ValidatingAdmissionPolicyBinding",
        "metadata:",
        '  name: {{ include "mlflow-operator.fullname" . }}-enforced-fields',
        '  labels: {{- include "mlflow-operator.labels" . | nindent 4 }}',
        "spec:",
        '  policyName: {{ include "mlflow-operator.fullname" . }}-enforced-fields',
        indent(binding),
        "{{- end }}",
        "",
    ])


if __name__ == "__main__":  # `make crd`: python -m mlflow_operator.admission charts/mlflow-operator/templates
    import sys
    from pathlib import Path

    target = Path(sys.argv[1]) / CHART_TEMPLATE
    target.write_text(chart_template())
    print(f"wrote {target}", file=sys.stderr)
