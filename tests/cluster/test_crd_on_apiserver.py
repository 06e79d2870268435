"""The CRD and the rendered manifests on the real API server: every example is accepted and
defaulted like the models do, every invalid spec is refused by the API server itself with the
rule's message naming the field, the scale subresource goes through the same rules, `kubectl
explain` shows the field docs, and everything `render` produces is accepted by the API server with
its pods admitted by the `restricted` Pod Security Standard."""
from __future__ import annotations

import json
import re
import secrets
import time

import pytest
import yaml
from mlflow_operator import yamlio
from mlflow_operator.api import RULES_BY_NAME, load_trackingserver
from mlflow_operator.constants import CRD_FILENAME, CRD_NAME
from mlflow_operator.render import render

from tests.unit.helpers import DATABASE, REPO, example_files, make, pod_templates
from tests.unit.spec_cases import BAD_NAMES, RULE_CASES, SCHEMA_CASES, VALID_SPECS

CRD_PATH = REPO / "crds" / CRD_FILENAME


@pytest.fixture(scope="module")
def crd(cluster):
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    # Poll rather than `kubectl wait`, which fails while the new CRD has no conditions at all.
    deadline = time.monotonic() + 60
    while True:
        established = cluster.kubectl(
            "get", f"crd/{CRD_NAME}", "-o", 'jsonpath={.status.conditions[?(@.type=="Established")].status}'
        ).stdout
        if established == "True":
            return cluster
        assert time.monotonic() < deadline, "the TrackingServer CRD was not Established within 60s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def ns(crd):
    """One namespace for the whole module (a namespace per test costs more than the test): every
    object gets a name of its own. Pods are checked against the `restricted` Pod Security Standard."""
    name = f"t-crd-{secrets.token_hex(3)}"
    crd.kubectl("create", "namespace", name)
    crd.kubectl("label", "namespace", name, "mlflow-operator.dev/test=true",
                "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest")
    deadline = time.monotonic() + 30
    while crd.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode != 0:
        assert time.monotonic() < deadline, f"namespace {name}: no default ServiceAccount within 30s"
        time.sleep(0.1)
    yield name
    crd.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def object_name(case: str) -> str:
    """A valid TrackingServer name for a test case."""
    return re.sub(r"[^a-z0-9]+", "-", case.lower())[:40].strip("-")


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
def test_examples_are_accepted_and_defaulted_like_the_models(crd, ns, path):
    obj = in_namespace(yaml.safe_load(path.read_text()), ns)
    result = create(crd, obj)
    assert result.returncode == 0, result.stderr
    stored = json.loads(result.stdout)
    # The API server's defaulting (from the CRD) equals pydantic's (from the models).
    assert stored["spec"] == load_trackingserver(obj).spec.dump()


@pytest.mark.parametrize("name", sorted(VALID_SPECS))
def test_valid_specs_are_accepted(crd, ns, name):
    result = create(crd, make(VALID_SPECS[name], name=object_name(f"valid-{name}"), namespace=ns))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(RULE_CASES))
def test_invalid_specs_are_refused_with_the_rules_message(crd, ns, name):
    spec, expected = RULE_CASES[name]
    result = create(crd, make(spec, name=object_name(name), namespace=ns))
    assert result.returncode != 0, f"the API server accepted {name}"
    for rule_name in expected:
        rule = RULES_BY_NAME[rule_name]
        assert rule.message in result.stderr
        assert f"spec.{rule.field}" in result.stderr


@pytest.mark.parametrize("name", sorted(BAD_NAMES))
def test_bad_names_are_refused(crd, ns, name):
    result = create(crd, make({}, name=BAD_NAMES[name], namespace=ns))
    assert result.returncode != 0
    if name != "uppercase":  # not even a valid object name: the generic check answers first
        assert RULES_BY_NAME["name-format"].message in result.stderr


@pytest.mark.parametrize("name", sorted(SCHEMA_CASES))
def test_schema_errors_name_the_field(crd, ns, name):
    obj, path, _ = SCHEMA_CASES[name]
    obj = in_namespace(obj, ns)
    obj["metadata"]["name"] = object_name(name)
    result = create(crd, obj)
    assert result.returncode != 0, f"the API server accepted {name}"
    assert path in result.stderr or path.rsplit(".", 1)[0] in result.stderr, result.stderr


def test_scale_subresource_obeys_the_rules(crd, ns):
    namespace = ns
    assert create(crd, make({}, name="embedded", namespace=namespace)).returncode == 0
    refused = crd.kubectl("scale", "-n", namespace, "trackingserver/embedded", "--replicas=2", check=False)
    assert refused.returncode != 0
    assert RULES_BY_NAME["embedded-single-replica"].message in refused.stderr
    external = make({"backendStore": DATABASE, "artifacts": {"destination": "s3://bucket"}}, name="external", namespace=namespace)
    assert create(crd, external).returncode == 0
    crd.kubectl("scale", "-n", namespace, "mlts/external", "--replicas=3")
    replicas = crd.kubectl("get", "-n", namespace, "mlts/external", "-o", "jsonpath={.spec.replicas}")
    assert replicas.stdout == "3"


def test_kubectl_explain_and_columns(crd, ns):
    namespace = ns
    explain = crd.kubectl("explain", "trackingservers.spec.artifacts.mode")
    assert "Proxied (default): the server stores artifacts" in explain.stdout
    assert create(crd, make({}, name="shown", namespace=namespace)).returncode == 0
    header = crd.kubectl("get", "-n", namespace, "mlts").stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "URL", "MODE", "VERSION", "AGE"]


@pytest.fixture(scope="module")
def restricted_cluster(crd):
    """The CRDs of the optional children (HTTPRoute, ServiceMonitor) installed too."""
    crd.install_gateway_api_crds()
    crd.install_servicemonitor_crd()
    return crd


RENDER_INPUTS = {p.name: yaml.safe_load(p.read_text()) for p in example_files()}
RENDER_INPUTS.update({f"spec:{name}": make(spec, name=object_name(f"r-{name}")) for name, spec in VALID_SPECS.items()})


@pytest.mark.parametrize("name", sorted(RENDER_INPUTS))
def test_rendered_manifests_are_accepted_and_pods_admitted_as_restricted(restricted_cluster, ns, name):
    namespace = ns
    manifests = render(in_namespace(RENDER_INPUTS[name], namespace))
    stream = yamlio.dump_all(manifests)  # as `mlflow-operator render` prints them
    result = restricted_cluster.kubectl("create", "--dry-run=server", "-f", "-", input=stream, check=False)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    # Pods are admitted only with their ServiceAccount present: create that one for real.
    accounts = [m for m in manifests if m["kind"] == "ServiceAccount"]
    restricted_cluster.kubectl("create", "-f", "-", input=yamlio.dump_all(accounts))
    pods = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pss-{i}", "namespace": namespace}, "spec": pod}
        for i, (_, pod) in enumerate(pod_templates(manifests))
    ]
    for pod in pods:  # a PriorityClass the example names does not exist here (and is not PSS's concern)
        pod["spec"].pop("priorityClassName", None)
    result = restricted_cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yamlio.dump_all(pods), check=False)
    assert result.returncode == 0, result.stderr


def test_restricted_enforcement_is_active(restricted_cluster, ns):
    """The control for the test above: a privileged pod is refused in the same setup."""
    namespace = ns
    manifests = render(make({}, name="privileged", namespace=namespace))
    restricted_cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(manifests[0]))  # the ServiceAccount
    _, pod = pod_templates(manifests)[0]
    pod = json.loads(json.dumps(pod))
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged", "namespace": namespace}, "spec": pod}
    result = restricted_cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert result.returncode != 0 and "violates PodSecurity" in result.stderr
