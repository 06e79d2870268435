"""A status change of details only (messages, replica counts) waits a few seconds after the
server's last status write; a change of a condition's status or reason, or a new generation, is
written at once."""
import copy
import time

from mlflow_operator.controller import handlers, kube
from mlflow_operator.controller.reconcile import PassResult


def _status(ready="False", reason="RollingOut", message="0/1 updated", generation=2, replicas=1):
    return {"observedGeneration": generation, "replicas": replicas, "conditions": [
        {"type": "Ready", "status": ready, "reason": reason, "message": message, "observedGeneration": generation},
        {"type": "Progressing", "status": "True", "reason": "RollingOut", "message": message, "observedGeneration": generation}]}


def test_only_details_moved_tells_messages_and_counts_from_transitions():
    current = _status()
    assert handlers.only_details_moved(current, _status(message="1/1 updated, 0 ready"))
    assert handlers.only_details_moved(current, _status(replicas=2))
    assert not handlers.only_details_moved(current, _status(ready="True", reason="Ready"))
    assert not handlers.only_details_moved(current, _status(reason="PodsStarting"))
    assert not handlers.only_details_moved(current, _status(generation=3))  # a new spec is seen: at once
    assert not handlers.only_details_moved(current, {**_status(), "mlflowVersion": "3.1.0"})  # a new field
    assert not handlers.only_details_moved({}, _status())  # the first status


def test_a_pass_holds_a_change_of_details_until_the_hold_ends_and_writes_a_transition_at_once(monkeypatch):
    body = {"metadata": {"name": "s", "namespace": "t", "generation": 2}, "spec": {}, "status": _status()}
    writes = []
    monkeypatch.setattr(kube, "patch_status", lambda *a: writes.append(copy.deepcopy(a[-1])) or {"status": a[-1]})
    next_status = {}
    monkeypatch.setattr(handlers, "reconcile", lambda *a, **k: PassResult(status=copy.deepcopy(next_status["value"])))

    next_status["value"] = _status(message="1/1 updated, 0 ready")
    result, written = handlers.run_pass(body, hold_until=time.monotonic() + 5)
    assert written is None and not writes
    assert 4 < result.requeue_after <= 5  # it comes back when the hold ends

    result, written = handlers.run_pass(body, hold_until=time.monotonic() - 1)  # the hold is over
    assert written is not None and writes[-1]["conditions"][0]["message"] == "1/1 updated, 0 ready"

    next_status["value"] = _status(ready="True", reason="Ready", message="1/1 ready")
    result, written = handlers.run_pass(body, hold_until=time.monotonic() + 5)  # a transition: not held
    assert written is not None and writes[-1]["conditions"][0]["status"] == "True" and len(writes) == 2
