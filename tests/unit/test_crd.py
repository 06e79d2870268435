"""The CRD in crds/ is what the models generate, and its schema is structural, documented and
valid for the Kubernetes API server."""
from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml
from mlflow_operator.api import SPEC_RULES, TrackingServerSpec
from mlflow_operator.constants import CRD_FILENAME
from mlflow_operator.crd import SchemaError, crd_yaml, custom_resource_definition, structural

from .helpers import REPO, example_files, validate_manifest
from .spec_cases import SCHEMA_CASES

CRD_PATH = REPO / "crds" / CRD_FILENAME
FORBIDDEN = {"$ref", "anyOf", "oneOf", "allOf", "not", "definitions", "$defs", "nullable"}


def structural_problems(node: dict, path: str = "", *, root: bool = True) -> list[str]:
    """Checks the structural-schema rules the API server enforces (an independent reading of
    "Specifying a structural schema" in the Kubernetes docs), plus our own: everything documented."""
    problems = []
    for key in FORBIDDEN & set(node):
        problems.append(f"{path or '/'}: {key} is not allowed")
    int_or_string = node.get("x-kubernetes-int-or-string")
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if "type" not in node and not int_or_string:
        problems.append(f"{path or '/'}: no type")
    if int_or_string and "type" in node:
        problems.append(f"{path}: int-or-string must not have a type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: both properties and additionalProperties")
    if isinstance(node.get("additionalProperties"), bool):
        problems.append(f"{path}: additionalProperties must be a schema")
    if node.get("type") == "object" and not ({"properties", "additionalProperties"} & set(node)) and not preserve:
        if path not in ("/metadata",):
            problems.append(f"{path}: object without properties")
    if node.get("type") == "array" and "items" not in node:
        problems.append(f"{path}: array without items")
    if not root and not node.get("description") and not path.endswith("]") and not path.startswith("/status"):
        if path not in ("/metadata",) and not path.endswith("/*"):
            problems.append(f"{path}: no description")
    for required in node.get("required", []):
        if required not in node.get("properties", {}):
            problems.append(f"{path}: required {required} is no property")
    for name, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{path}/{name}", root=False)
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]", root=False)
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}/*", root=False)
    for rule in node.get("x-kubernetes-validations", []):
        if not rule.get("rule") or not rule.get("message"):
            problems.append(f"{path}: validation without rule or message")
    return problems


def openapi(crd: dict) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_crds_folder_is_up_to_date():
    assert CRD_PATH.read_text() == crd_yaml(), "crds/ is stale: run `mlflow-operator crd --output crds/`"


def test_crd_file_is_the_generated_object():
    assert yaml.safe_load(CRD_PATH.read_text()) == custom_resource_definition()


def test_schema_is_structural_and_documented():
    assert structural_problems(openapi(custom_resource_definition())) == []


def test_structural_checker_catches_problems():
    schema = copy.deepcopy(openapi(custom_resource_definition()))
    spec = schema["properties"]["spec"]["properties"]
    spec["replicas"] = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    del spec["workers"]["description"]
    spec["auth"]["properties"]["type"].pop("type")
    assert sorted(structural_problems(schema)) == [
        "/spec/auth/type: no type",
        "/spec/replicas: anyOf is not allowed",
        "/spec/replicas: no description",
        "/spec/replicas: no type",
        "/spec/workers: no description",
    ]


def test_generator_refuses_what_it_cannot_express():
    with pytest.raises(SchemaError):
        structural({"anyOf": [{"type": "integer"}, {"type": "boolean"}]}, {})


def test_crd_validates_against_the_kubernetes_schema():
    validate_manifest(custom_resource_definition())


def test_names_subresources_and_columns():
    crd = custom_resource_definition()
    assert crd["metadata"]["name"] == "trackingservers.mlflow-operator.dev"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("TrackingServer", "trackingservers", ["mlts"])
    assert names["categories"] == ["mlflow"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {
        "status": {},
        "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                  "labelSelectorPath": ".status.selector"},
    }
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "URL": ".status.url",
        "Mode": ".status.mode",
        "Version": ".status.mlflowVersion",
        "Class": ".status.className",
        "Age": ".metadata.creationTimestamp",
    }


def test_defaults_enums_and_int_or_string():
    spec = openapi(custom_resource_definition())["properties"]["spec"]
    props = spec["properties"]
    assert "default" not in spec  # the API server would check `{}` against the rules undefaulted
    assert props["replicas"]["default"] == 1 and props["replicas"]["minimum"] == 0
    assert props["artifacts"]["default"] == {}
    assert props["artifacts"]["properties"]["mode"]["enum"] == ["Proxied", "Direct", "Split", "ArtifactsOnly"]
    assert props["artifacts"]["properties"]["mode"]["default"] == "Proxied"
    assert props["storage"]["properties"]["accessModes"]["default"] == ["ReadWriteOnce"]
    assert props["resources"]["default"]["requests"] == {"cpu": "100m", "memory": "512Mi"}
    quantity = props["resources"]["properties"]["limits"]["additionalProperties"]
    assert quantity["x-kubernetes-int-or-string"] is True and "type" not in quantity
    assert "isQuantity" in quantity["x-kubernetes-validations"][0]["rule"]
    assert "default" not in props["image"]  # left out, the image follows operator upgrades
    assert "backendStore" not in spec.get("required", [])
    secret_ref = props["backendStore"]["properties"]["uri"]["properties"]["secretKeyRef"]
    assert secret_ref["required"] == ["name", "key"]
    status = openapi(custom_resource_definition())["properties"]["status"]["properties"]
    assert status["conditions"]["x-kubernetes-list-type"] == "map"
    assert status["conditions"]["items"]["required"] == ["type", "status", "reason", "lastTransitionTime"]


def test_schema_defaults_are_the_models_defaults():
    """The API server's defaulting and pydantic's give the same spec."""
    spec = openapi(custom_resource_definition())["properties"]["spec"]
    model = TrackingServerSpec().dump()
    for name, prop in spec["properties"].items():
        if "default" in prop:
            assert TrackingServerSpec.model_validate({name: prop["default"]}).dump()[name] == model[name], name


def crd_json_schema_validator():
    """The CRD's OpenAPI schema read as JSON Schema (the x-kubernetes-* keywords are ignored):
    an independent check that YAML accepted by the models is accepted by the CRD's schema."""
    return jsonschema.Draft7Validator(openapi(custom_resource_definition()))


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_examples_match_the_crd_schema(path):
    errors = list(crd_json_schema_validator().iter_errors(yaml.safe_load(path.read_text())))
    assert errors == []


@pytest.mark.parametrize("name", sorted(n for n, case in SCHEMA_CASES.items() if case[2] != "unknown field"))
def test_crd_schema_refuses_what_the_models_refuse(name):
    # (Unknown fields are left out: JSON Schema allows them, the API server prunes or refuses them.)
    obj, path, _ = SCHEMA_CASES[name]
    errors = list(crd_json_schema_validator().iter_errors(obj))
    located = {".".join(str(p) for p in e.absolute_path) for e in errors}
    assert located & {path, path.rsplit(".", 1)[0]}, f"the CRD schema does not refuse {path}: {located}"


def lookup(schema: dict, field_path: str) -> dict:
    node = schema
    for part in field_path.strip(".").split("."):
        node = node["properties"][part]
    return node


def test_every_rule_is_attached_with_a_field_path_that_exists():
    spec = openapi(custom_resource_definition())["properties"]["spec"]
    validations = spec["x-kubernetes-validations"]
    assert [v["message"] for v in validations] == [r.message for r in SPEC_RULES]
    for v in validations:
        assert lookup(spec, v["fieldPath"])
    root = openapi(custom_resource_definition())["x-kubernetes-validations"]
    assert len(root) == 1 and "metadata.name" in root[0]["rule"]


def test_cel_rules_only_iterate_bounded_collections():
    """The API server estimates each rule's cost; unbounded lists or maps would exceed it."""
    spec = openapi(custom_resource_definition())["properties"]["spec"]
    assert lookup(spec, "podTemplate.extraEnv")["maxItems"] == 64
    assert lookup(spec, "podTemplate.extraEnv")["items"]["properties"]["name"]["maxLength"] == 253
    assert lookup(spec, "podTemplate.labels")["maxProperties"] == 64
    assert lookup(spec, "artifacts.destination")["maxLength"] == 2048
