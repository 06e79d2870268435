"""What the operator's log says over a TrackingServer's life: no alarm on a normal delete, and an
absent optional API (Gateway API, ServiceMonitor) said once, not at every rescan."""
from __future__ import annotations

import json
from collections import Counter

from tests.cluster.test_operator_reconcile import operator  # noqa: F401 - the fixture
from tests.operator_fixtures import apply_object, get_json, load_example, wait_for, wait_for_conditions


def log_records(op) -> list[dict]:
    records = []
    for line in op.log_path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            records.append({"message": line})
    return records


def test_a_delete_is_quiet_and_repeated_warnings_are_said_once(cluster, operator, namespace):  # noqa: F811
    ts = load_example("02-sqlite.yaml", namespace)
    name = ts["metadata"]["name"]
    apply_object(cluster, ts)
    wait_for_conditions(cluster, namespace, name, timeout=120, op=operator, Ready="True")
    cluster.kubectl("delete", "trackingserver", name, "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for("the TrackingServer to be gone", lambda: get_json(cluster, "trackingserver", name, "-n", namespace) is None)

    mine = [r for r in log_records(operator) if (r.get("object") or {}).get("namespace") == namespace]
    assert mine, "no log line names the object (JSON lines carry it under 'object')"
    alarms = [r["message"] for r in mine if "cancelled" in r["message"] or "did not exit" in r["message"]]
    assert not alarms, alarms
    unresolved = Counter(r["message"] for r in log_records(operator) if r["message"].startswith("Unresolved resources"))
    assert all(n == 1 for n in unresolved.values()), unresolved
