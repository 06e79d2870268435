"""The validation corpus (tests/corpus/) through `mlflow-operator render`: every spec that cannot
work is refused, naming its field with the rule's sentence; every legitimate one renders. The
cluster tier applies the same corpus to the API server (tests/cluster/test_corpus.py)."""
from __future__ import annotations

import io

import pytest
import yaml
from mlflow_operator.cli import main

from tests.corpus import INVALID, VALID


def render(obj: dict) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["render", "-f", "-"], out=out, err=err, stdin=io.StringIO(yaml.safe_dump(obj)))
    return code, out.getvalue(), err.getvalue()


def test_the_corpus_is_large_enough():
    assert len(INVALID) >= 100 and len(VALID) >= 30


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.name)
def test_render_refuses_with_the_message(case):
    code, out, err = render(case.object())
    assert code != 0 and out == "", f"render accepted {case.name}"
    assert case.refusal_in(err), f"expected '{case.field}: ...{case.message}' in:\n{err}"


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_render_accepts(case):
    code, out, err = render(case.object())
    assert code == 0, err
    assert "kind: Deployment" in out
