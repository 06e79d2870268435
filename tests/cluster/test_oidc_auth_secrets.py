"""auth.type OIDC through the operator on the real control plane (kwok runs the pods): the cookie
secret and Split mode's internal credential are generated once, survive a spec change that rolls
the pods, and their values appear nowhere in the TrackingServer's status, its events or the
operator's log. The sign-in itself is tested against a real provider in tests/workload."""
from __future__ import annotations

import base64
import json

from tests.operator_fixtures import apply_object, get_json, load_example, wait_for, wait_for_conditions

from .test_operator_reconcile import (  # noqa: F401 (fixtures)
    create_referenced_secrets, database_listener, deployment, operator, point_s3_endpoint_at)

OIDC = {"issuerUrl": "https://dex.example.com/dex", "clientId": "mlflow",
        "clientSecret": {"secretKeyRef": {"name": "sso-client", "key": "secret"}},
        "allowedGroups": ["ml-team"], "adminGroup": "ml-admins"}


def decoded(secret: dict) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_oidc_split_secrets_are_generated_once_and_never_shown(cluster, operator, namespace, database_listener):
    ts = load_example("07-split.yaml", namespace)
    ts["spec"]["auth"] = {"type": "OIDC", "oidc": OIDC}
    point_s3_endpoint_at(ts, database_listener)
    name = ts["metadata"]["name"]
    created = create_referenced_secrets(cluster, ts, database_listener)
    for generated in (f"{name}-oidc", f"{name}-oidc-internal"):  # the operator's to make, not ours
        if generated in created:
            cluster.kubectl("delete", "secret", generated, "-n", namespace)
    apply_object(cluster, ts)
    wait_for_conditions(cluster, namespace, name, timeout=180, op=operator, Ready="True")
    cookie = get_json(cluster, "secret", f"{name}-oidc", "-n", namespace)
    internal = get_json(cluster, "secret", f"{name}-oidc-internal", "-n", namespace)
    assert cookie["immutable"] is True and set(cookie["data"]) == {"cookie-secret"}
    assert set(internal["data"]) == {"password", "htpasswd"}
    assert len(base64.urlsafe_b64decode(decoded(cookie)["cookie-secret"])) == 32
    containers = {c["name"] for c in deployment(cluster, namespace, f"{name}-artifacts")["spec"]["template"]["spec"]["containers"]}
    assert containers == {"mlflow", "oauth2-proxy"}

    # a change that rolls the pods keeps both Secrets as they were
    hash_key = "mlflow-operator.dev/config-hash"
    before = deployment(cluster, namespace, name)["spec"]["template"]["metadata"]["annotations"][hash_key]
    ts["spec"]["auth"]["oidc"]["allowedGroups"] = ["ml-team", "ml-guests"]
    apply_object(cluster, ts)
    wait_for("the pods to roll on the groups change",
             lambda: deployment(cluster, namespace, name)["spec"]["template"]["metadata"]["annotations"][hash_key] != before)
    wait_for_conditions(cluster, namespace, name, timeout=180, op=operator, Ready="True")
    assert get_json(cluster, "secret", f"{name}-oidc", "-n", namespace)["data"] == cookie["data"]
    assert get_json(cluster, "secret", f"{name}-oidc-internal", "-n", namespace)["data"] == internal["data"]

    shown = json.dumps(get_json(cluster, "trackingserver", name, "-n", namespace)["status"])
    shown += json.dumps(get_json(cluster, "events", "-n", namespace)["items"])
    shown += operator.log_path.read_text(errors="replace")
    values = {**decoded(cookie), **decoded(internal), "client secret": created["sso-client"]["secret"]}
    for key, value in values.items():
        assert value.strip() not in shown, f"{key} is shown in status, events or the operator's log"
