"""The validation corpus (tests/corpus/) on the real API server with the generated CRD, applied by
`kubectl apply --dry-run=server` as a user would: every spec that cannot work is refused, naming
its field with the rule's sentence, and with every sentence `mlflow-operator render` gives for
it (one source per rule); every legitimate spec is accepted."""
from __future__ import annotations

import secrets
import time

import pytest
import yaml
from mlflow_operator.api import InvalidTrackingServer, load_trackingserver
from mlflow_operator.constants import CRD_FILENAME, CRD_NAME

from tests.corpus import INVALID, VALID
from tests.unit.helpers import REPO

CRD_PATH = REPO / "crds" / CRD_FILENAME


@pytest.fixture(scope="module")
def api(cluster):
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    deadline = time.monotonic() + 60
    while cluster.kubectl(
        "get", f"crd/{CRD_NAME}", "-o", 'jsonpath={.status.conditions[?(@.type=="Established")].status}'
    ).stdout != "True":
        assert time.monotonic() < deadline, "the TrackingServer CRD was not Established within 60s"
        time.sleep(0.2)
    namespace = f"t-corpus-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", namespace)
    yield cluster, namespace
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)


def apply(api, obj: dict):
    cluster, _ = api
    return cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj), check=False)


def render_errors(obj: dict) -> list:
    try:
        load_trackingserver(obj)
    except InvalidTrackingServer as exc:
        return exc.errors
    return []


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.name)
def test_the_api_server_refuses_with_the_message(api, case):
    obj = case.object(api[1])
    result = apply(api, obj)
    assert result.returncode != 0, f"the API server accepted {case.name}"
    assert case.refusal_in(result.stderr), f"expected '{case.field}: ...{case.message}' in:\n{result.stderr}"
    # render gives no sentence the API server does not give: the same rules, the same words
    for error in render_errors(obj):
        assert error.path in result.stderr and error.message in result.stderr, (
            f"render says '{error}', the API server:\n{result.stderr}"
        )


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_the_api_server_accepts(api, case):
    result = apply(api, case.object(api[1]))
    assert result.returncode == 0, result.stderr
    assert "created (server dry run)" in result.stdout
