"""TrackingServerClass on the real control plane, with the operator running under the chart's RBAC:
two teams' servers from one class converge with what the class derives for each; a class edit
re-reconciles its servers (same generation); an enforced field is reported and not applied; a
class deleted while in use leaves its servers running with a condition, and coming back recovers;
the default class is given to a new server and kept."""
from __future__ import annotations

import pytest

from mlflow_operator.constants import DEFAULT_CLASS_ANNOTATION
from tests.operator_fixtures import apply_object, condition, get_json, wait_for, wait_for_conditions

IMAGE = "registry.example.com/mlflow-server:3.18.0"


def make_class(name: str, workers: int = 4, default: bool = False) -> dict:
    meta: dict = {"name": name}
    if default:
        meta["annotations"] = {DEFAULT_CLASS_ANNOTATION: "true"}
    return {
        "apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServerClass", "metadata": meta,
        "spec": {
            "defaults": {"workers": workers, "podTemplate": {"labels": {"platform": "ml"}}, "artifacts": {"mode": "Proxied"}},
            "enforced": ["image", "podTemplate"],
            "artifacts": {"destinationTemplate": "s3://ml-artifacts/{namespace}/{name}",
                          "serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/mlflow-{namespace}-{name}"}},
            "exposure": {"hostTemplate": "{name}.{namespace}.mlflow.example.com", "ingressClassName": "nginx",
                         "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"}},
        },
    }


def server(name: str, namespace: str, spec: dict) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def container(cluster, namespace: str, name: str) -> dict:
    dep = get_json(cluster, "deployment", name, "-n", namespace) or {}
    return ((dep.get("spec") or {}).get("template", {}).get("spec", {}).get("containers") or [{}])[0]


def env_of(cluster, namespace: str, name: str) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(cluster, namespace, name).get("env", [])}


@pytest.fixture
def second_namespace(cluster, namespace):
    other = f"team-b-{namespace[-6:]}"
    cluster.kubectl("create", "namespace", other)
    yield other
    cluster.kubectl("delete", "namespace", other, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def class_name(cluster, namespace):
    name = f"std-{namespace[-6:]}"
    yield name
    cluster.kubectl("delete", "trackingserverclass", name, "--ignore-not-found", check=False)


def test_two_teams_from_one_class_converge_and_follow_the_class(cluster, operator, namespace, second_namespace, class_name):
    apply_object(cluster, make_class(class_name))
    for ns in (namespace, second_namespace):
        apply_object(cluster, server("team", ns, {"className": class_name}))
    for ns in (namespace, second_namespace):
        live = wait_for_conditions(cluster, ns, "team", timeout=120, op=operator, Ready="True", ClassApplied="True")
        assert live["status"]["className"] == class_name
        assert live["status"]["url"] == f"https://team.{ns}.mlflow.example.com"
        ingress = get_json(cluster, "ingress", "team", "-n", ns)
        assert ingress["spec"]["ingressClassName"] == "nginx"
        assert ingress["spec"]["tls"] == [{"hosts": [f"team.{ns}.mlflow.example.com"], "secretName": "team-tls"}]
        assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
        account = get_json(cluster, "serviceaccount", "team", "-n", ns)
        assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == f"arn:aws:iam::123456789012:role/mlflow-{ns}-team"
        env = env_of(cluster, ns, "team")
        assert env["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"] == f"s3://ml-artifacts/{ns}/team"
        assert env["MLFLOW_OPERATOR_WORKERS"] == "4"  # the class's default
        assert container(cluster, ns, "team")["image"] != IMAGE

    # A class edit reaches every server of the class, though no TrackingServer changed.
    generation = get_json(cluster, "trackingserver", "team", "-n", namespace)["metadata"]["generation"]
    apply_object(cluster, make_class(class_name, workers=6))
    for ns in (namespace, second_namespace):
        wait_for(f"{ns}: the class edit in the Deployment",
                 lambda ns=ns: env_of(cluster, ns, "team").get("MLFLOW_OPERATOR_WORKERS") == "6", timeout=60)
    assert get_json(cluster, "trackingserver", "team", "-n", namespace)["metadata"]["generation"] == generation


def test_an_enforced_field_is_reported_and_not_applied(cluster, operator, namespace, class_name):
    apply_object(cluster, make_class(class_name))
    apply_object(cluster, server("team", namespace, {"className": class_name, "image": IMAGE}))
    live = wait_for_conditions(cluster, namespace, "team", timeout=120, op=operator, ClassApplied="False")
    cond = condition(live, "ClassApplied")
    assert cond["reason"] == "EnforcedFieldsIgnored" and "spec.image" in cond["message"], cond
    wait_for("the Deployment", lambda: container(cluster, namespace, "team").get("image"))
    assert container(cluster, namespace, "team")["image"] != IMAGE
    # Dropping the override clears the condition.
    cluster.kubectl("patch", "trackingserver", "team", "-n", namespace, "--type=json", "-p", '[{"op":"remove","path":"/spec/image"}]')
    wait_for_conditions(cluster, namespace, "team", timeout=120, op=operator, ClassApplied="True")


def test_a_class_deleted_in_use_leaves_the_server_running_and_recovers(cluster, operator, namespace, class_name):
    apply_object(cluster, make_class(class_name))
    apply_object(cluster, server("team", namespace, {"className": class_name}))
    wait_for_conditions(cluster, namespace, "team", timeout=120, op=operator, Ready="True", ClassApplied="True")
    deployment = get_json(cluster, "deployment", "team", "-n", namespace)
    cluster.kubectl("delete", "trackingserverclass", class_name)
    live = wait_for_conditions(cluster, namespace, "team", timeout=60, op=operator, ClassApplied="False")
    assert condition(live, "ClassApplied")["reason"] == "ClassNotFound"
    assert condition(live, "Ready")["status"] == "True"  # the server still serves
    kept = get_json(cluster, "deployment", "team", "-n", namespace)
    assert kept["metadata"]["uid"] == deployment["metadata"]["uid"]
    assert kept["spec"]["template"] == deployment["spec"]["template"]  # untouched
    assert get_json(cluster, "ingress", "team", "-n", namespace) is not None  # nothing pruned
    apply_object(cluster, make_class(class_name))
    wait_for_conditions(cluster, namespace, "team", timeout=60, op=operator, Ready="True", ClassApplied="True")


def test_a_new_server_gets_the_default_class_and_keeps_it(cluster, operator, namespace, class_name):
    apply_object(cluster, make_class(class_name, default=True))
    apply_object(cluster, server("team", namespace, {}))
    live = wait_for_conditions(cluster, namespace, "team", timeout=120, op=operator, Ready="True", ClassApplied="True")
    assert live["status"]["className"] == class_name
    assert get_json(cluster, "ingress", "team", "-n", namespace)["spec"]["rules"][0]["host"] == f"team.{namespace}.mlflow.example.com"
    # No longer the default: the server keeps the class it got.
    cluster.kubectl("annotate", "trackingserverclass", class_name, f"{DEFAULT_CLASS_ANNOTATION}-")
    cluster.kubectl("annotate", "trackingserver", "team", "-n", namespace, "touched=1")
    wait_for_conditions(cluster, namespace, "team", timeout=60, op=operator, Ready="True", ClassApplied="True")
    assert get_json(cluster, "trackingserver", "team", "-n", namespace)["status"]["className"] == class_name
