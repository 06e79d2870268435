"""Validation rules written once and enforced twice: CEL for the API server, Python for `render`.

A `Rule` carries a CEL expression (placed in the CRD as `x-kubernetes-validations` where the rule
sits in the schema), its message (or messageExpression), the field it reports (fieldPath) and its
reason, plus the Python predicate and message that the models evaluate. The corpus tests in
tests/corpus/ apply the same specs to the real API server and to `mlflow-operator render` and
require the same refusal with the same sentence from both.

Rules sit on three kinds of nodes:
- a model (`cel_rules` class attribute of an ApiModel subclass), where `self` is the object;
- a string, list or map type (`checked(...)`), where `self` is the value itself;
- the spec and the root object (rules.py), for cross-field rules.

Strings and lists keep maxLength/maxItems so that the API server's cost estimate stays bounded
(it refuses a CRD whose rules might cost too much); map keys are estimated as empty strings.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Callable

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

# Kubernetes' reasons for a CEL rule's error (x-kubernetes-validations[].reason). Not
# FieldValueDuplicate: the API server then prints "Duplicate value" without the message.
INVALID = "FieldValueInvalid"
FORBIDDEN = "FieldValueForbidden"
REQUIRED = "FieldValueRequired"


@dataclass(frozen=True)
class Rule:
    name: str
    cel: str  # must evaluate to true for a valid value
    message: str  # a sentence naming what to write instead
    field: str  # the field the message is about, relative to where the rule sits ("": itself)
    check: Callable[[Any], bool]  # Python twin of `cel`: True when valid
    reason: str = INVALID
    # A CEL expression computing the message from the value (e.g. naming the bad key), and its
    # Python twin. Both fall back to `message`.
    message_expression: str | None = None
    explain: Callable[[Any], str] | None = None

    def message_for(self, value: Any) -> str:
        return self.explain(value) if self.explain else self.message

    def validation(self) -> dict[str, Any]:
        """The CRD's x-kubernetes-validations entry."""
        entry: dict[str, Any] = {"rule": self.cel, "message": self.message}
        if self.message_expression:
            entry["messageExpression"] = self.message_expression
        if self.field:
            entry["fieldPath"] = "." + self.field
        if self.reason != INVALID:
            entry["reason"] = self.reason
        return entry


def cel_str(value: str) -> str:
    """A Python string as a CEL single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def cel_list(values: Any) -> str:
    return "[" + ", ".join(cel_str(v) for v in values) + "]"


def violations(rules: tuple[Rule, ...] | list[Rule], value: Any) -> list[tuple[str, str]]:
    """(field, message) of every rule the value breaks, in rule order."""
    return [(rule.field, rule.message_for(value)) for rule in rules if not rule.check(value)]


RULES_ERROR = "cel_rules"


def refuse(found: list[tuple[str, str]]) -> PydanticCustomError:
    return PydanticCustomError(
        RULES_ERROR, "{summary}", {"summary": "; ".join(m for _, m in found), "violations": found}
    )


def _validator(rules: tuple[Rule, ...]) -> Callable[[Any], Any]:
    def validate(value: Any) -> Any:
        found = violations(rules, value)
        if found:
            raise refuse(found)
        return value

    return validate


def checked(base: Any, *rules: Rule, **field: Any) -> Any:
    """A value type with rules, e.g. checked(str, rule, max_length=63) for list items or fields.
    The rules go into the type's schema (so `self` is the value) and run after pydantic's checks."""
    extra = dict(field.pop("json_schema_extra", None) or {})
    extra["x-kubernetes-validations"] = [r.validation() for r in rules]
    return Annotated[(base, Field(json_schema_extra=extra, **field), AfterValidator(_validator(rules)))]


def model_violations(model: Any) -> list[tuple[str, str]]:
    rules = type(model).__dict__.get("cel_rules", ())
    return violations(rules, model) if rules else []


# ---- regular expressions: RE2 (the API server) and Python `re` read them alike ----------------

DNS_LABEL_PART = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS_LABEL = rf"^{DNS_LABEL_PART}$"
DNS_SUBDOMAIN = rf"^{DNS_LABEL_PART}(\.{DNS_LABEL_PART})*$"
QUALIFIED_NAME_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
# A label or annotation key: an optional DNS-subdomain prefix and '/', then a name of at most 63.
QUALIFIED_NAME = rf"^({DNS_LABEL_PART}(\.{DNS_LABEL_PART})*/)?{QUALIFIED_NAME_PART}$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"


def matches(pattern: str, value: str) -> bool:
    return re.search(pattern, value) is not None


def is_dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and matches(DNS_SUBDOMAIN, value)


def is_qualified_name(value: str) -> bool:
    prefix_ok = value.index("/") <= 253 if "/" in value else len(value) <= 63
    return len(value) <= 317 and matches(QUALIFIED_NAME, value) and prefix_ok


# CEL twins of the predicates above, over a CEL expression `x`.
def cel_dns_subdomain(x: str) -> str:
    return f"(size({x}) <= 253 && {x}.matches({cel_str(DNS_SUBDOMAIN)}))"


def cel_qualified_name(x: str) -> str:
    return (
        f"(size({x}) <= 317 && {x}.matches({cel_str(QUALIFIED_NAME)}) && "
        f"({x}.contains('/') ? {x}.indexOf('/') <= 253 : size({x}) <= 63))"
    )


def string_rule(name: str, cel: str, check: Callable[[str], bool], message: str, reason: str = INVALID) -> Rule:
    """A rule on a string value (`self` is the string)."""
    return Rule(
               name,
               cel,
               message,
               "",
               check,
               reason=reason,
           )


def pattern_rule(name: str, pattern: str, message: str, reason: str = INVALID) -> Rule:
    """A string must match `pattern`: the API server's CEL and render's check read the same regex."""
    return string_rule(name, f"self.matches({cel_str(pattern)})", lambda v: matches(pattern, v), message, reason)


def dns_subdomain_rule(what: str, example: str) -> Rule:
    return string_rule(
        f"{what}-dns-subdomain",
        cel_dns_subdomain("self"),
        is_dns_subdomain,
        f"must be a {what}: lower-case letters, digits, '-' and '.', at most 253 characters, "
        f"starting and ending with a letter or digit, such as {example}",
    )


def dns_label_rule(what: str, example: str) -> Rule:
    return string_rule(
        f"{what}-dns-label",
        f"self.matches({cel_str(DNS_LABEL)})",
        lambda v: matches(DNS_LABEL, v),
        f"must be a {what}: at most 63 lower-case letters, digits and '-', starting and ending "
        f"with a letter or digit, such as {example}",
    )


# ---- maps of labels and annotations -----------------------------------------------------------

def _first_bad_key(cel_ok: str) -> str:
    return f"self.filter(k, !({cel_ok}))[0]"


def map_keys_rule(name: str, key_ok_cel: str, key_ok: Callable[[str], bool], sentence: str) -> Rule:
    """Every key of a map obeys a rule; the message names the first key that does not.
    `sentence` follows "key '<key>' ", e.g. "is not a label key: ...". `key_ok_cel` reads `k`."""
    return Rule(
               name,
               f"self.all(k, {key_ok_cel})",
               f"one of the keys {sentence}",
               "",
               lambda m: all(key_ok(k) for k in m),
               message_expression=f"'key ' + {_first_bad_key(key_ok_cel)} + ' {_cel_escape(sentence)}'",
               explain=lambda m: f"key {next(k for k in m if not key_ok(k))} {sentence}",
           )


def map_values_rule(name: str, value_ok_cel: str, value_ok: Callable[[str], bool], sentence: str) -> Rule:
    """Every value of a map obeys a rule (`value_ok_cel` reads `self[k]`); the message names its key."""
    return Rule(
               name,
               f"self.all(k, {value_ok_cel})",
               f"one of the values {sentence}",
               "",
               lambda m: all(value_ok(v) for v in m.values()),
               message_expression=f"'the value of ' + {_first_bad_key(value_ok_cel)} + ' {_cel_escape(sentence)}'",
               explain=lambda m: f"the value of {next(k for k, v in m.items() if not value_ok(v))} {sentence}",
           )


def _cel_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


LABEL_KEY_SENTENCE = (
    "is not a valid key: write an optional DNS prefix and '/', then at most 63 letters, digits, "
    "'-', '_' or '.' starting and ending with a letter or digit, such as team or example.com/team"
)
LABEL_VALUE_SENTENCE = (
    "is not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and "
    "ending with a letter or digit (or empty), such as fraud-detection"
)
LABEL_KEY_RULE = map_keys_rule("label-keys", cel_qualified_name("k"), is_qualified_name, LABEL_KEY_SENTENCE)
LABEL_VALUE_RULE = map_values_rule(
    "label-values", f"self[k].matches({cel_str(LABEL_VALUE)})", lambda v: matches(LABEL_VALUE, v), LABEL_VALUE_SENTENCE
)
ANNOTATION_KEY_RULE = map_keys_rule("annotation-keys", cel_qualified_name("k"), is_qualified_name, LABEL_KEY_SENTENCE)
