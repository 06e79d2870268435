"""The CRD on the real API server: every example is accepted and defaulted like the models do, every
invalid spec is refused by the API server itself with the rule's message naming the field, the
scale subresource goes through the same rules, and `kubectl explain` shows the field docs."""
from __future__ import annotations

import json

import pytest
import yaml

from mlflow_operator.api import RULES_BY_NAME, load_trackingserver
from mlflow_operator.constants import CRD_FILENAME, CRD_NAME
from tests.unit.helpers import DATABASE, REPO, example_files, make
from tests.unit.spec_cases import BAD_NAMES, RULE_CASES, SCHEMA_CASES, VALID_SPECS

CRD_PATH = REPO / "crds" / CRD_FILENAME


@pytest.fixture(scope="module")
def crd(cluster):
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    return cluster


def in_namespace(obj: dict, namespace: str) -> dict:
    obj = json.loads(json.dumps(obj))
    obj["metadata"]["namespace"] = namespace
    return obj


def create(cluster, obj: dict):
    return cluster.kubectl("create", "-o", "json", "-f", "-", input=yaml.safe_dump(obj), check=False)


def test_the_api_server_accepts_the_crd(crd):
    established = crd.kubectl("get", f"crd/{CRD_NAME}", "-o", "json")
    conditions = {c["type"]: c["status"] for c in json.loads(established.stdout)["status"]["conditions"]}
    assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_examples_are_accepted_and_defaulted_like_the_models(crd, namespace, path):
    obj = in_namespace(yaml.safe_load(path.read_text()), namespace)
    result = create(crd, obj)
    assert result.returncode == 0, result.stderr
    stored = json.loads(result.stdout)
    # The API server's defaulting (from the CRD) equals pydantic's (from the models).
    assert stored["spec"] == load_trackingserver(obj).spec.dump()


@pytest.mark.parametrize("name", sorted(VALID_SPECS))
def test_valid_specs_are_accepted(crd, namespace, name):
    result = create(crd, make(VALID_SPECS[name], namespace=namespace))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(RULE_CASES))
def test_invalid_specs_are_refused_with_the_rules_message(crd, namespace, name):
    spec, expected = RULE_CASES[name]
    result = create(crd, make(spec, namespace=namespace))
    assert result.returncode != 0, f"the API server accepted {name}"
    for rule_name in expected:
        rule = RULES_BY_NAME[rule_name]
        assert rule.message in result.stderr
        assert f"spec.{rule.field}" in result.stderr


@pytest.mark.parametrize("name", sorted(BAD_NAMES))
def test_bad_names_are_refused(crd, namespace, name):
    result = create(crd, make({}, name=BAD_NAMES[name], namespace=namespace))
    assert result.returncode != 0
    if name != "uppercase":  # not even a valid object name: the generic check answers first
        assert RULES_BY_NAME["name-format"].message in result.stderr


@pytest.mark.parametrize("name", sorted(SCHEMA_CASES))
def test_schema_errors_name_the_field(crd, namespace, name):
    obj, path, _ = SCHEMA_CASES[name]
    result = create(crd, in_namespace(obj, namespace))
    assert result.returncode != 0, f"the API server accepted {name}"
    assert path in result.stderr or path.rsplit(".", 1)[0] in result.stderr, result.stderr


def test_scale_subresource_obeys_the_rules(crd, namespace):
    assert create(crd, make({}, name="embedded", namespace=namespace)).returncode == 0
    refused = crd.kubectl("scale", "-n", namespace, "trackingserver/embedded", "--replicas=2", check=False)
    assert refused.returncode != 0
    assert RULES_BY_NAME["embedded-single-replica"].message in refused.stderr
    external = make({"backendStore": DATABASE, "artifacts": {"destination": "s3://b"}}, name="external", namespace=namespace)
    assert create(crd, external).returncode == 0
    crd.kubectl("scale", "-n", namespace, "mlts/external", "--replicas=3")
    replicas = crd.kubectl("get", "-n", namespace, "mlts/external", "-o", "jsonpath={.spec.replicas}")
    assert replicas.stdout == "3"


def test_kubectl_explain_and_columns(crd, namespace):
    explain = crd.kubectl("explain", "trackingservers.spec.artifacts.mode")
    assert "Proxied (default): the server stores artifacts" in explain.stdout
    assert create(crd, make({}, name="shown", namespace=namespace)).returncode == 0
    header = crd.kubectl("get", "-n", namespace, "mlts").stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "URL", "MODE", "VERSION", "AGE"]
