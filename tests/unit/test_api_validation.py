"""The models accept every valid spec and refuse each invalid one with the rule's message, naming
the field (the same rules and messages the CRD's CEL gives the API server)."""
from __future__ import annotations

import pytest
import yaml
from mlflow_operator.api import RULES_BY_NAME, SPEC_RULES, InvalidTrackingServer, load_trackingserver
from mlflow_operator.api.spec import TrackingServerSpec

from .helpers import example_files, make
from .spec_cases import BAD_NAMES, RULE_CASES, SCHEMA_CASES, VALID_SPECS


@pytest.mark.parametrize("name", sorted(VALID_SPECS))
def test_valid_specs_are_accepted(name):
    ts = load_trackingserver(make(VALID_SPECS[name]))
    assert ts.spec.replicas >= 0


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_examples_are_valid(path):
    ts = load_trackingserver(yaml.safe_load(path.read_text()))
    assert ts.metadata.namespace, "examples name their namespace"


@pytest.mark.parametrize("name", sorted(RULE_CASES))
def test_rule_violations_are_refused_with_their_message(name):
    spec, expected = RULE_CASES[name]
    with pytest.raises(InvalidTrackingServer) as caught:
        load_trackingserver(make(spec))
    reported = [(e.path, e.message) for e in caught.value.errors]
    assert reported == [("spec." + RULES_BY_NAME[r].field, RULES_BY_NAME[r].message) for r in expected]
    assert str(caught.value).startswith("spec.")


def test_every_rule_has_a_refusing_case():
    covered = {rule for _, rules in RULE_CASES.values() for rule in rules}
    assert covered == {rule.name for rule in SPEC_RULES}


@pytest.mark.parametrize("name", sorted(BAD_NAMES))
def test_bad_names_are_refused(name):
    with pytest.raises(InvalidTrackingServer) as caught:
        load_trackingserver(make({}, name=BAD_NAMES[name]))
    assert [e.path for e in caught.value.errors] == ["metadata.name"]
    assert "at most 40 characters" in caught.value.errors[0].message


def test_longest_allowed_name_is_accepted():
    assert load_trackingserver(make({}, name="a" * 40)).name == "a" * 40


@pytest.mark.parametrize("name", sorted(SCHEMA_CASES))
def test_schema_errors_name_the_field(name):
    obj, path, fragment = SCHEMA_CASES[name]
    with pytest.raises(InvalidTrackingServer) as caught:
        load_trackingserver(obj)
    matching = [e for e in caught.value.errors if e.path == path]
    assert matching, f"no error for {path}: {caught.value}"
    assert fragment in matching[0].message


def test_wrong_api_version_and_kind_are_refused():
    obj = make({})
    obj["apiVersion"] = "mlflow-operator.dev/v1"
    with pytest.raises(InvalidTrackingServer, match="apiVersion"):
        load_trackingserver(obj)


def test_not_a_mapping_is_refused():
    with pytest.raises(InvalidTrackingServer, match="mapping"):
        load_trackingserver(["spec"])


def test_defaults_of_an_empty_spec():
    spec = load_trackingserver(make({})).spec
    assert spec.replicas == 1 and spec.workers == 2
    assert spec.backend_store is None  # embedded SQLite
    assert spec.artifacts.mode == "Proxied" and spec.artifacts.destination is None
    assert spec.auth.type == "None"
    assert spec.storage.size == "10Gi" and spec.storage.access_modes == ["ReadWriteOnce"]
    assert spec.retention_policy == "Retain"
    assert spec.image is None  # follows the operator's pinned MLflow version


def test_spec_round_trips_through_its_yaml_form():
    spec = load_trackingserver(make(VALID_SPECS["split-azure-gateway"])).spec
    assert TrackingServerSpec.model_validate(spec.dump()) == spec
