"""The chart's ValidatingAdmissionPolicy is generated from the models (admission.py): it must not
drift, and it has one validation per enforceable field, comparing with the built-in default."""
from __future__ import annotations

from mlflow_operator.admission import CHART_TEMPLATE, builtin_defaults, chart_template, validations
from mlflow_operator.api.trackingserverclass import ENFORCEABLE

from tests.unit.helpers import REPO


def test_the_chart_template_is_generated_from_the_models():
    path = REPO / "charts" / "mlflow-operator" / "templates" / CHART_TEMPLATE
    assert path.read_text() == chart_template(), "run `make crd` (python -m mlflow_operator.admission ...)"


def test_each_enforceable_field_is_checked_against_its_built_in_default():
    rules = validations()
    assert len(rules) == len(ENFORCEABLE)
    auth = next(r for r in rules if "'auth' in params.spec.enforced" in r["expression"])
    assert 'dyn(object.spec.auth) == dyn({"type": dyn("None")})' in auth["expression"]
    assert builtin_defaults()["retentionPolicy"] == "Retain"
    image = next(r for r in rules if "'image' in params.spec.enforced" in r["expression"])
    assert "object.spec.image ==" not in image["expression"]  # no default: only leaving it out passes
