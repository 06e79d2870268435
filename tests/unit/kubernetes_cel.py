"""The parts of Kubernetes' CEL library the CRD's rules use (k8s.io/apiserver/pkg/cel/library:
quantity, CIDR, strings' indexOf/replace), for cel-python, so the unit tier evaluates the CRD's
own expressions. Quantities and CIDRs are read by the operator's Python twins of those rules;
the cluster tier checks the same expressions on the real API server."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import celpy
from celpy import celtypes
from mlflow_operator.api.kubetypes import _cidr_ok
from mlflow_operator.api.quantity import parse_quantity


@dataclass(frozen=True)
class Quantity:
    value: Fraction


@dataclass(frozen=True)
class Cidr:
    network: Any


def _quantity(text: Any) -> Quantity:
    value = parse_quantity(str(text))
    if value is None:
        raise ValueError(f"not a quantity: {text!r}")
    return Quantity(value)


def _compare(a: Quantity, b: Quantity) -> int:
    return (a.value > b.value) - (a.value < b.value)


def _cidr(text: Any) -> Cidr:
    if not _cidr_ok(str(text)):
        raise ValueError(f"not a CIDR: {text!r}")
    return Cidr(ipaddress.ip_network(str(text), strict=False))


def _contains_cidr(outer: Cidr, inner: Any) -> bool:
    inner_net = _cidr(inner).network if not isinstance(inner, Cidr) else inner.network
    return inner_net.version == outer.network.version and inner_net.subnet_of(outer.network)


FUNCTIONS = {
    "isQuantity": lambda s: celtypes.BoolType(parse_quantity(str(s)) is not None),
    "quantity": _quantity,
    "isLessThan": lambda a, b: celtypes.BoolType(_compare(a, b) < 0),
    "compareTo": lambda a, b: celtypes.IntType(_compare(a, b)),
    "isGreaterThan": lambda a, b: celtypes.BoolType(_compare(a, b) > 0),
    "isInteger": lambda q: celtypes.BoolType(q.value.denominator == 1),
    "isCIDR": lambda s: celtypes.BoolType(_cidr_ok(str(s))),
    "cidr": _cidr,
    "containsCIDR": lambda c, other: celtypes.BoolType(_contains_cidr(c, other)),
    "prefixLength": lambda c: celtypes.IntType(c.network.prefixlen),
    "indexOf": lambda s, sub: celtypes.IntType(str(s).find(str(sub))),
    "replace": lambda s, a, b: celtypes.StringType(str(s).replace(str(a), str(b))),
}

ENV = celpy.Environment()
_programs: dict[str, Any] = {}


def evaluate(expression: str, value: Any) -> Any:
    if expression not in _programs:
        _programs[expression] = ENV.program(ENV.compile(expression), functions=FUNCTIONS)
    return _programs[expression].evaluate({"self": celpy.json_to_cel(value)})


def _field_path(path: str, field_path: str) -> str:
    return path + field_path if path else field_path.lstrip(".")


def failures(schema: dict[str, Any], value: Any, path: str = "", broken: set[str] | None = None) -> list[tuple[str, str]]:
    """(path, message) of every rule of the schema that the (defaulted) value breaks, walking the
    value as the API server does: rules of absent fields are not evaluated. `broken` collects the
    expressions of the rules that failed."""
    found: list[tuple[str, str]] = []
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            continue  # a transition rule: the API server evaluates it on updates only
        if not bool(evaluate(rule["rule"], value)):
            message = rule["message"]
            if "messageExpression" in rule:
                message = str(evaluate(rule["messageExpression"], value))
            found.append((_field_path(path, rule.get("fieldPath", "")), message))
            if broken is not None:
                broken.add(rule["rule"])
    if isinstance(value, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if name in value:
                found += failures(prop, value[name], f"{path}.{name}" if path else name, broken)
        if isinstance(schema.get("additionalProperties"), dict):
            for key, item in value.items():
                found += failures(schema["additionalProperties"], item, f"{path}[{key}]", broken)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += failures(schema["items"], item, f"{path}[{i}]", broken)
    return found


def all_rules(schema: dict[str, Any]) -> set[str]:
    """Every rule expression in a schema."""
    rules = {r["rule"] for r in schema.get("x-kubernetes-validations", []) if "oldSelf" not in r["rule"]}
    for child in (schema.get("properties") or {}).values():
        rules |= all_rules(child)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            rules |= all_rules(schema[key])
    return rules
