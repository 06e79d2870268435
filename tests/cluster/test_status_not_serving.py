"""Status while nothing serves, on the real control plane: the real scheduler cannot place a pod
whose claim the real PV controller cannot bind (no provisioner, no default StorageClass), and the
TrackingServer must say so in the controllers' own words, with a Warning event."""
from __future__ import annotations

import json

import pytest

from tests.cluster.test_operator_reconcile import operator  # noqa: F401 - the fixture
from tests.operator_fixtures import apply_object, condition, get_json, load_example, wait_for, wait_for_conditions

pytestmark = pytest.mark.cluster


def warning_events(cluster, namespace: str, name: str) -> list[dict]:
    events = get_json(cluster, "events", "-n", namespace,
                      "--field-selector", f"involvedObject.kind=TrackingServer,involvedObject.name={name},type=Warning")
    return events["items"]


def test_an_unbindable_claim_is_reported_with_its_reason_and_progressing_is_not_complete(
        cluster, operator, namespace, volume_provisioner):  # noqa: F811
    ts = load_example("02-sqlite.yaml", namespace)
    name = ts["metadata"]["name"]
    with volume_provisioner.hold():
        apply_object(cluster, ts)
        live = wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Available="False")
        claim_reason = (f"PersistentVolumeClaim {name}-data: FailedBinding: no persistent volumes available for this "
                        "claim and no storage class is set")

        def available_now() -> dict:
            return condition(get_json(cluster, "trackingserver", name, "-n", namespace), "Available")

        # The PV controller posts its reason at its next claim sync (every 15 s); pods are rechecked every 10 s.
        wait_for("Available to name the scheduler's and the claim's reasons",
                 lambda: available_now().get("reason") == "Unschedulable" and claim_reason in available_now()["message"],
                 timeout=120, explain=lambda: f"{available_now()}\nclaim events: " + json.dumps(get_json(
                     cluster, "events", "-n", namespace, "--field-selector", "involvedObject.kind=PersistentVolumeClaim")))
        live = get_json(cluster, "trackingserver", name, "-n", namespace)
        available, progressing, ready = (condition(live, t) for t in ("Available", "Progressing", "Ready"))
        assert "unbound immediate PersistentVolumeClaims" in available["message"], available
        assert progressing["reason"] != "Complete", progressing
        assert progressing["status"] == "False" and progressing["reason"] == "Unschedulable", progressing
        assert "0/1 pods ready" in progressing["message"]
        assert ready["status"] == "False" and ready["reason"] == "Unschedulable", ready
        wait_for("a Warning event for Unschedulable",
                 lambda: any(e["reason"] == "Unschedulable" and "no storage class is set" in e["message"]
                             for e in warning_events(cluster, namespace, name)), timeout=60)
        unschedulable_events = [e for e in warning_events(cluster, namespace, name) if e["reason"] == "Unschedulable"]
    # A volume appears: the pod is scheduled and the server becomes Ready, with Progressing Complete.
    live = wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True")
    assert condition(live, "Progressing")["reason"] == "Complete", condition(live, "Progressing")
    assert len(unschedulable_events) == 1, [e["message"] for e in unschedulable_events]  # once, not once per pass
