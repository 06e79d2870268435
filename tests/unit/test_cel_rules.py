"""The CRD's CEL rules, evaluated by a CEL interpreter (cel-python), agree with the Python rules on
every valid and invalid spec: the API server and `mlflow-operator render` refuse the same specs.

The objects are defaulted from the CRD schema first, as the API server does before validating.
The real API server evaluates the same rules in the cluster tests (Kubernetes' CEL library adds
cost limits and a few functions; these rules use only standard CEL).
"""
from __future__ import annotations

import copy
import functools
from typing import Any

import pytest
import yaml

celpy = pytest.importorskip("celpy")

from mlflow_operator.api import NAME_RULE, SPEC_RULES, TrackingServerSpec  # noqa: E402
from mlflow_operator.crd import custom_resource_definition  # noqa: E402

from .helpers import example_files, make  # noqa: E402
from .spec_cases import BAD_NAMES, RULE_CASES, VALID_SPECS  # noqa: E402

SCHEMA = custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
ENV = celpy.Environment()


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting: absent properties get their default, recursively (defaults too)."""
    if isinstance(value, dict):
        for name, prop in schema.get("properties", {}).items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                apply_defaults(prop, value[name])
        if isinstance(schema.get("additionalProperties"), dict):
            for item in value.values():
                apply_defaults(schema["additionalProperties"], item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(schema["items"], item)
    return value


@functools.lru_cache(maxsize=None)
def compiled(expression: str):
    return ENV.program(ENV.compile(expression))  # parsing is the slow part: once per rule


def holds(expression: str, self_value: Any) -> bool:
    if not isinstance(self_value, celpy.celtypes.MapType):
        self_value = celpy.json_to_cel(self_value)
    result = compiled(expression).evaluate({"self": self_value})
    if not isinstance(result, celpy.celtypes.BoolType):
        raise AssertionError(f"rule did not give a boolean: {expression!r} -> {result!r}")
    return bool(result)


def cel_failures(obj: dict[str, Any]) -> list[str]:
    obj = apply_defaults(SCHEMA, copy.deepcopy(obj))
    spec = celpy.json_to_cel(obj["spec"])
    failed = [rule.name for rule in SPEC_RULES if not holds(rule.cel, spec)]
    if not holds(NAME_RULE.cel, obj):
        failed.insert(0, NAME_RULE.name)
    return failed


def python_failures(obj: dict[str, Any]) -> list[str]:
    spec = TrackingServerSpec.model_validate(obj.get("spec", {}))
    failed = [rule.name for rule in SPEC_RULES if not rule.check(spec)]
    if not NAME_RULE.check(obj["metadata"]["name"]):
        failed.insert(0, NAME_RULE.name)
    return failed


@pytest.mark.parametrize("name", sorted(VALID_SPECS))
def test_valid_specs_pass_every_cel_rule(name):
    assert cel_failures(make(VALID_SPECS[name])) == []


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_examples_pass_every_cel_rule(path):
    assert cel_failures(yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("name", sorted(RULE_CASES))
def test_cel_refuses_each_invalid_spec_like_python(name):
    spec, expected = RULE_CASES[name]
    obj = make(spec)
    assert cel_failures(obj) == expected
    assert python_failures(obj) == expected


@pytest.mark.parametrize("name", sorted(BAD_NAMES))
def test_cel_refuses_bad_names(name):
    assert cel_failures(make({}, name=BAD_NAMES[name])) == ["name-format"]


def test_defaulting_fills_nested_sections():
    obj = apply_defaults(SCHEMA, make({}))
    assert obj["spec"]["artifacts"] == {"mode": "Proxied"}
    assert obj["spec"]["metrics"]["serviceMonitor"]["enabled"] is False
    assert "backendStore" not in obj["spec"] and "autoscaling" not in obj["spec"]


def test_cel_evaluation_can_fail():
    assert not holds("self.replicas <= 1", {"replicas": 2})
