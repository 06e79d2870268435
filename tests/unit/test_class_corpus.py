"""The TrackingServerClass corpus (tests/corpus/classes_*.yaml) through `mlflow-operator render
--class`: a class that cannot work is refused, naming its field with the rule's sentence, and no
manifest is printed; a legitimate one renders a TrackingServer of the class. The cluster tier
applies the same classes to the API server (tests/cluster/test_class_corpus.py)."""
from __future__ import annotations

import io

import pytest
import yaml
from mlflow_operator.cli import main

from tests.corpus import CLASS_INVALID, CLASS_VALID


def render_with(tmp_path, cls: dict) -> tuple[int, str, str]:
    (tmp_path / "class.yaml").write_text(yaml.safe_dump(cls))
    server = {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
              "metadata": {"name": "team", "namespace": "team-a"}, "spec": {"className": cls["metadata"]["name"]}}
    (tmp_path / "server.yaml").write_text(yaml.safe_dump(server))
    out, err = io.StringIO(), io.StringIO()
    code = main(["render", "-f", str(tmp_path / "server.yaml"), "--class", str(tmp_path / "class.yaml")],
                out=out, err=err, stdin=io.StringIO(""))
    return code, out.getvalue(), err.getvalue()


def test_the_class_corpus_covers_every_part():
    fields = {c.field.split(".")[1].split("[")[0] for c in CLASS_INVALID}
    assert {"artifacts", "exposure", "enforced", "defaults"} <= fields and len(CLASS_INVALID) >= 25


@pytest.mark.parametrize("case", CLASS_INVALID, ids=lambda c: c.name)
def test_render_refuses_the_class_with_the_message(tmp_path, case):
    code, out, err = render_with(tmp_path, case.object())
    assert code != 0 and out == "", f"render accepted {case.name}"
    assert "TrackingServerClass" in err and case.refusal_in(err), f"expected '{case.field}: ...{case.message}' in:\n{err}"


@pytest.mark.parametrize("case", CLASS_VALID, ids=lambda c: c.name)
def test_render_accepts_the_class(tmp_path, case):
    code, out, err = render_with(tmp_path, case.object())
    assert code == 0, err
    assert "kind: Deployment" in out
