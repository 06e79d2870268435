"""The TrackingServerClass corpus (tests/corpus/classes_*.yaml) on the real API server with the
generated CRD, by `kubectl apply --dry-run=server`: a class that cannot work is refused, naming its
field with the rule's sentence and with every sentence `render --class` gives for it; every
legitimate class is accepted. `kubectl explain` documents the class's fields, defaults included."""
from __future__ import annotations

import secrets
import time

import pytest
import yaml
from mlflow_operator.api import InvalidTrackingServer, load_trackingserverclass
from mlflow_operator.constants import CLASS_CRD_FILENAME, CLASS_CRD_NAME

from tests.corpus import CLASS_INVALID, CLASS_VALID
from tests.unit.helpers import REPO


@pytest.fixture(scope="module")
def api(cluster):
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds" / CLASS_CRD_FILENAME))
    deadline = time.monotonic() + 60
    while cluster.kubectl(
        "get", f"crd/{CLASS_CRD_NAME}", "-o", 'jsonpath={.status.conditions[?(@.type=="Established")].status}',
        check=False,  # no conditions yet at first
    ).stdout != "True":
        assert time.monotonic() < deadline, "the TrackingServerClass CRD was not Established within 60s"
        time.sleep(0.2)
    return cluster, f"c{secrets.token_hex(3)}"


def apply(api, obj: dict):
    cluster, _ = api
    return cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj), check=False)


def render_errors(obj: dict) -> list:
    try:
        load_trackingserverclass(obj)
    except InvalidTrackingServer as exc:
        return exc.errors
    return []


@pytest.mark.parametrize("case", CLASS_INVALID, ids=lambda c: c.name)
def test_the_api_server_refuses_the_class_with_the_message(api, case):
    obj = case.object(api[1])
    result = apply(api, obj)
    assert result.returncode != 0, f"the API server accepted {case.name}"
    assert case.refusal_in(result.stderr), f"expected '{case.field}: ...{case.message}' in:\n{result.stderr}"
    for error in render_errors(obj):
        assert error.path in result.stderr and error.message in result.stderr, (
            f"render says '{error}', the API server:\n{result.stderr}"
        )


@pytest.mark.parametrize("case", CLASS_VALID, ids=lambda c: c.name)
def test_the_api_server_accepts_the_class(api, case):
    result = apply(api, case.object(api[1]))
    assert result.returncode == 0, result.stderr
    assert "created (server dry run)" in result.stdout


def test_kubectl_explain_documents_the_class(api):
    cluster, _ = api
    text = cluster.kubectl("explain", "trackingserverclass.spec").stdout
    for field in ("defaults", "enforced", "artifacts", "exposure"):
        assert field in text
    auth = cluster.kubectl("explain", "trackingserverclass.spec.defaults.auth.type").stdout
    assert "basic-auth" in auth  # the TrackingServer's own documentation, under defaults
    assert "spec.className" in cluster.kubectl("explain", "trackingserverclass").stdout


@pytest.mark.parametrize("path", sorted((REPO / "examples" / "classes").glob("*.yaml")), ids=lambda p: p.name)
def test_the_api_server_accepts_the_examples(api, path):
    doc = yaml.safe_load(path.read_text())
    if doc["kind"] == "TrackingServer":
        doc["metadata"].pop("namespace")  # the namespace of the example need not exist here
        api[0].kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds" / "trackingservers.mlflow-operator.dev.yaml"))
        result = api[0].kubectl("apply", "--dry-run=server", "-n", "default", "-f", "-", input=yaml.safe_dump(doc), check=False)
    else:
        result = apply(api, doc)
    assert result.returncode == 0, result.stderr
