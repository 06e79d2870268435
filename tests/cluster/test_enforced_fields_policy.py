"""The chart's ValidatingAdmissionPolicy (every TrackingServerClass its parameter) on the real API
server: a TrackingServer naming a class that enforces a field, and setting that field, is refused
at `kubectl apply` with a message naming the field (the first such) and the class; leaving it out (or at its
built-in default) passes; other classes' servers and servers without a class pass, until a class
is marked the default: a new server without className then gets its enforcement; an update that
leaves an earlier value as it was passes (the class may start enforcing after the server was
made), one that changes it is refused."""
from __future__ import annotations

import json

import pytest

from mlflow_operator.constants import DEFAULT_CLASS_ANNOTATION

from tests.operator_fixtures import CHART, OPERATOR_NAMESPACE, apply_object, install_crds, wait_for

RELEASE = "policy-test"


def klass(name: str, enforced: list[str]) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServerClass", "metadata": {"name": name},
            "spec": {"defaults": {"auth": {"type": "Basic"}, "networkPolicy": {"enabled": True}}, "enforced": enforced}}


def server(namespace: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def dry_run(cluster, obj: dict):
    return cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False)


@pytest.fixture
def policy(cluster, namespace):
    install_crds(cluster)
    rendered = cluster.helm("template", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE,
                            "--show-only", "templates/enforced-fields-policy.yaml").stdout
    cluster.kubectl("apply", "-f", "-", input=rendered)
    names = {"enforcing": f"enforcing-{namespace[-6:]}", "open": f"open-{namespace[-6:]}", "default": f"default-{namespace[-6:]}"}
    yield names
    cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=rendered, check=False)
    for name in names.values():
        cluster.kubectl("delete", "trackingserverclass", name, "--ignore-not-found", check=False)


def test_enforced_fields_are_refused_by_the_api_server(cluster, namespace, policy):
    apply_object(cluster, klass(policy["enforcing"], ["auth", "image", "networkPolicy"]))
    apply_object(cluster, klass(policy["open"], []))
    sets_image = server(namespace, "team", {"className": policy["enforcing"], "image": "registry.example.com/mlflow:3.18.0"})
    # A new policy and its parameters reach the API server's admission within seconds.
    refused = wait_for("the policy to refuse", lambda: (lambda p: p if p.returncode != 0 else None)(dry_run(cluster, sets_image)),
                       timeout=60, interval=1)
    assert f"spec.image is enforced by TrackingServerClass {policy['enforcing']}: leave it out" in refused.stderr, refused.stderr
    several = server(namespace, "team", {"className": policy["enforcing"], "auth": {"type": "None"},
                                         "networkPolicy": {"enabled": False}, "workers": 4})
    assert dry_run(cluster, several).returncode == 0  # the built-in defaults, written out, are leaving them out
    several["spec"]["networkPolicy"] = {"enabled": True, "ingressFrom": [{"namespaceSelector": {}}]}
    several["spec"]["auth"] = {"type": "Basic"}
    proc = dry_run(cluster, several)  # the API server names the first field refused
    assert proc.returncode != 0 and "spec.auth is enforced" in proc.stderr, proc.stderr
    del several["spec"]["auth"]
    proc = dry_run(cluster, several)
    assert proc.returncode != 0 and "spec.networkPolicy is enforced" in proc.stderr, proc.stderr
    for passes in (server(namespace, "team", {"className": policy["enforcing"], "workers": 4}),
                   server(namespace, "team", {"className": policy["open"], "image": "registry.example.com/mlflow:3.18.0"}),
                   server(namespace, "team", {"image": "registry.example.com/mlflow:3.18.0"})):
        proc = dry_run(cluster, passes)
        assert proc.returncode == 0, (passes["spec"], proc.stderr)
    # A new server without className gets the class marked the default: its enforced fields too.
    default = klass(policy["default"], ["image"])
    default["metadata"]["annotations"] = {DEFAULT_CLASS_ANNOTATION: "true"}
    apply_object(cluster, default)
    no_class = server(namespace, "team", {"image": "registry.example.com/mlflow:3.18.0"})
    refused = wait_for("the default class's enforcement", lambda: (lambda p: p if p.returncode != 0 else None)(
        dry_run(cluster, no_class)), timeout=60, interval=1)
    assert f"spec.image is enforced by TrackingServerClass {policy['default']}" in refused.stderr, refused.stderr
    assert dry_run(cluster, server(namespace, "team", {"workers": 4})).returncode == 0
    cluster.kubectl("delete", "trackingserverclass", policy["default"])
    # Made under the open class, then the class starts enforcing image: unchanged passes, changed is refused.
    earlier = server(namespace, "earlier", {"className": policy["open"], "image": "registry.example.com/mlflow:3.18.0"})
    apply_object(cluster, earlier)
    apply_object(cluster, klass(policy["open"], ["image"]))
    changed = server(namespace, "earlier", {"className": policy["open"], "image": "registry.example.com/mlflow:3.19.0"})
    wait_for("the class's new enforcement in admission", lambda: dry_run(cluster, changed).returncode != 0, timeout=60, interval=1)
    cluster.kubectl("label", "trackingserver", "earlier", "-n", namespace, "team=fraud")
    proc = cluster.kubectl("apply", "-f", "-", input=json.dumps(changed), check=False)
    assert proc.returncode != 0 and "spec.image is enforced" in proc.stderr, proc.stderr
