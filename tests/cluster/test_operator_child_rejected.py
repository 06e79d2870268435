"""A spec the TrackingServer's validation lets through but a child's does not: status says which
child, which field and what the API server said, with a Warning event, and a spec fix recovers.

(Named test_operator_*: it starts the operator, which must not run before test_crd_on_apiserver,
whose TrackingServers it would reconcile.)

Pod annotations larger than 256 KiB in total are such a spec: the CRD bounds each annotation's key
and the number of annotations, not their total size (CEL cannot sum them within its cost limit),
so only the Deployment is refused."""
from __future__ import annotations

import pytest

import json

from tests.operator_fixtures import condition, get_json, wait_for_conditions


def apply_server_side(cluster, obj: dict) -> None:
    # Server-side: client-side apply would copy the spec into an annotation of the TrackingServer
    # itself, which the 256 KiB limit then refuses.
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(obj))


@pytest.fixture
def operator(cluster, operator_process, volume_provisioner):
    operator_process.assert_alive()
    yield operator_process
    operator_process.assert_alive()


def test_refused_child_is_reported_with_kind_field_and_message(cluster, operator, namespace):
    ts = {
        "apiVersion": "mlflow-operator.dev/v1alpha1",
        "kind": "TrackingServer",
        "metadata": {"name": "huge-notes", "namespace": namespace},
        "spec": {"podTemplate": {"annotations": {"example.com/notes": "x" * 300_000}}},
    }
    apply_server_side(cluster, ts)
    live = wait_for_conditions(cluster, namespace, "huge-notes", op=operator, Reconciled="False", Ready="False")
    reconciled = condition(live, "Reconciled")
    assert reconciled["reason"] == "ChildRejected", reconciled
    message = reconciled["message"]
    assert message.startswith("Deployment huge-notes was refused by the API server: "), message
    assert "spec.template.annotations: Too long" in message, message
    assert "xxxxxxxxxx" not in message  # the value itself is not copied into status
    events = get_json(cluster, "events", "-n", namespace, "--field-selector",
                      "involvedObject.name=huge-notes,type=Warning")["items"]
    assert any(e["reason"] == "ChildRejected" and "spec.template.annotations" in e["message"] for e in events), events

    del ts["spec"]["podTemplate"]
    apply_server_side(cluster, ts)
    live = wait_for_conditions(cluster, namespace, "huge-notes", op=operator, timeout=120, Reconciled="True")
    assert get_json(cluster, "deployment", "huge-notes", "-n", namespace) is not None
