"""The CRD's CEL rules, evaluated with cel-python on the corpus (tests/corpus/): they refuse what
`render` refuses with the same field and sentence (messageExpression included), and accept every
legitimate spec. The API server does the same in tests/cluster/test_corpus.py."""
from __future__ import annotations

import copy

import pytest

pytest.importorskip("celpy")

from mlflow_operator.api import InvalidTrackingServer, load_trackingserver  # noqa: E402

from tests.corpus import INVALID, VALID  # noqa: E402

from .kubernetes_cel import all_rules, failures  # noqa: E402
from .spec_cases import RULE_CASES  # noqa: E402
from .test_cel_rules import SCHEMA, apply_defaults  # noqa: E402
from .helpers import make  # noqa: E402

SCHEMA_ERRORS = ("Required value", "Unsupported value", "should be", "should have", "must be of type", "unknown field",
                 "Too long", "must have at most")


def cel_failures(obj: dict) -> list[tuple[str, str]]:
    return failures(SCHEMA, apply_defaults(SCHEMA, copy.deepcopy(obj)))


def render_failures(obj: dict) -> tuple[list[tuple[str, str]], bool]:
    """render's rule failures, and whether it found schema errors too."""
    try:
        load_trackingserver(obj)
    except InvalidTrackingServer as exc:
        rules = [(e.path, e.message) for e in exc.errors if not e.message.startswith(SCHEMA_ERRORS)]
        return rules, len(rules) < len(exc.errors)
    return [], False


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.name)
def test_cel_refuses_what_render_refuses(case):
    obj = case.object()
    expected, schema_errors = render_failures(obj)
    if not expected:
        pytest.skip("refused by the schema (types, enums, bounds), not by a rule")
    try:
        found = cel_failures(obj)
    except Exception:
        if schema_errors:  # a value of the wrong type can make a rule fail to evaluate
            pytest.skip("rules not evaluable on a value the schema refuses")
        raise
    assert set(expected) <= set(found), f"render: {expected}\nCEL: {found}"


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_cel_accepts_the_valid_corpus(case):
    assert cel_failures(case.object()) == []


def test_every_rule_of_the_crd_refuses_some_spec():
    """Each CEL rule in the CRD is broken by at least one invalid spec (the corpus, and the rule
    cases of spec_cases.py), so each one is tested refusing as well as accepting."""
    broken: set[str] = set()
    objects = [c.object() for c in INVALID] + [make(spec) for spec, _ in RULE_CASES.values()]
    for obj in objects:
        try:
            failures(SCHEMA, apply_defaults(SCHEMA, copy.deepcopy(obj)), broken=broken)
        except Exception:
            continue  # values of the wrong type: refused by the schema
    untested = sorted(all_rules(SCHEMA) - broken)
    assert untested == [], "rules no spec breaks:\n" + "\n".join(untested)
