"""Properties every rendering has: deterministic, schema-valid, restricted pods, labels, ownership,
a config hash that follows Secrets, and no randomness in rendering."""
from __future__ import annotations

import copy
import secrets as stdlib_secrets

import kubernetes_validate
import pytest
import yaml
from mlflow_operator.api import load_trackingserver
from mlflow_operator.constants import CONFIG_HASH_ANNOTATION, RETENTION_ANNOTATION
from mlflow_operator.render import (
    RenderContext,
    client_url,
    fresh_secret_values,
    render,
    required_generated_secrets,
    secret_data_hash,
    status_selector,
)
from mlflow_operator.render.ingress import nginx_size

from .helpers import example_files, load_example, make, of_kind, one, pod_templates, restricted_violations, validate_manifest
from .spec_cases import VALID_SPECS

ALL_INPUTS = {p.name: yaml.safe_load(p.read_text()) for p in example_files()}
ALL_INPUTS.update({f"spec:{k}": make(v, uid="6a1e4b1c-0000-4000-8000-000000000001") for k, v in VALID_SPECS.items()})
# Kinds whose schemas ship with Kubernetes; HTTPRoute and ServiceMonitor come from CRDs.
CORE_KINDS = {"ServiceAccount", "Secret", "PersistentVolumeClaim", "Job", "Deployment", "Service", "Ingress",
              "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "ClusterRoleBinding"}
CONTEXT = RenderContext(
    generated_secrets={"team-admin": {"username": "admin", "password": "x" * 32},
                       "team-flask-secret-key": {"secret-key": "y" * 43}},
)


def rendered(name):
    return render(ALL_INPUTS[name], CONTEXT)


@pytest.mark.parametrize("name", sorted(ALL_INPUTS))
def test_manifests_validate_against_the_kubernetes_schema(name):
    manifests = rendered(name)
    for manifest in manifests:
        if manifest["kind"] in CORE_KINDS:
            validate_manifest(manifest)
    assert {m["kind"] for m in manifests} - CORE_KINDS <= {"HTTPRoute", "ServiceMonitor"}


def test_schema_validation_catches_a_broken_manifest():
    deployment = copy.deepcopy(one(rendered("02-sqlite.yaml"), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "5000"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(deployment)


@pytest.mark.parametrize("name", sorted(ALL_INPUTS))
def test_rendering_is_deterministic(name):
    first = yaml.safe_dump_all(render(copy.deepcopy(ALL_INPUTS[name]), CONTEXT), sort_keys=False)
    second = yaml.safe_dump_all(render(copy.deepcopy(ALL_INPUTS[name]), CONTEXT), sort_keys=False)
    assert first == second
    assert "&id" not in first  # no shared objects (YAML anchors) in the output


def test_rendering_draws_no_random_numbers(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("render must not generate secrets")

    monkeypatch.setattr(stdlib_secrets, "token_urlsafe", forbidden)
    monkeypatch.setattr(stdlib_secrets, "token_bytes", forbidden)
    assert render(load_example("08-team.yaml"))


@pytest.mark.parametrize("name", sorted(ALL_INPUTS))
def test_every_pod_passes_the_restricted_pod_security_standard(name):
    pods = pod_templates(rendered(name))
    assert pods
    for where, pod in pods:
        assert restricted_violations(pod) == [], where
        assert pod["automountServiceAccountToken"] is False, where
        for c in pod.get("initContainers", []) + pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            # the image's entrypoint, or the OIDC sign-in sidecar's binary
            assert c["command"][0] == ("/bin/oauth2-proxy" if c["name"] == "oauth2-proxy" else "mlflow-entrypoint")


def test_restricted_checker_catches_violations():
    _, pod = pod_templates(rendered("02-sqlite.yaml"))[0]
    bad = copy.deepcopy(pod)
    bad["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    bad["containers"][0]["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    bad["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    bad["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    assert restricted_violations(bad) == [
        "volume host has type {'hostPath'}",
        "container migrate has seccomp profile Unconfined",
        "container check has seccomp profile Unconfined",
        "container mlflow allows privilege escalation",
        "container mlflow does not drop ALL capabilities",
        "container mlflow adds capabilities ['SYS_ADMIN']",
        "container mlflow has seccomp profile Unconfined",
    ]


@pytest.mark.parametrize("name", sorted(ALL_INPUTS))
def test_labels_and_selectors(name):
    manifests = rendered(name)
    instance = ALL_INPUTS[name]["metadata"]["name"]
    for m in manifests:
        labels = m["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "mlflow"
        assert labels["app.kubernetes.io/instance"] == instance
        assert labels["app.kubernetes.io/managed-by"] == "mlflow-operator"
        assert labels["app.kubernetes.io/component"] in ("tracking", "artifacts", "migration")
    pods = {}
    for d in of_kind(manifests, "Deployment"):
        selector = d["spec"]["selector"]["matchLabels"]
        template_labels = d["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= template_labels.items()
        pods[d["metadata"]["name"]] = template_labels
    for service in of_kind(manifests, "Service"):
        matched = [n for n, labels in pods.items() if service["spec"]["selector"].items() <= labels.items()]
        assert matched == [service["metadata"]["name"]]


def test_children_are_owned_except_data_and_generated_secrets():
    out = render(make(VALID_SPECS["sqlite-basic-auth"], uid="uid-1"), CONTEXT)
    for m in out:
        refs = m["metadata"].get("ownerReferences")
        if m["kind"] in ("PersistentVolumeClaim", "Secret"):
            assert refs is None, m["kind"]
            assert m["metadata"]["annotations"][RETENTION_ANNOTATION] == "Retain"
        else:
            assert refs == [{"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer", "name": "team",
                             "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}]


def test_retention_delete_makes_data_owned():
    out = render(make({**VALID_SPECS["sqlite-basic-auth"], "retentionPolicy": "Delete"}, uid="uid-1"), CONTEXT)
    for m in of_kind(out, "PersistentVolumeClaim") + of_kind(out, "Secret"):
        assert m["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        assert m["metadata"]["annotations"][RETENTION_ANNOTATION] == "Delete"


def test_nothing_is_owned_without_a_uid():
    assert all("ownerReferences" not in m["metadata"] for m in render(load_example("07-split.yaml")))


def config_hash(manifests, deployment):
    return one(manifests, "Deployment", deployment)["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]


def test_config_hash_follows_the_data_of_referenced_secrets():
    ts = load_example("07-split.yaml")
    base = render(ts)
    changed_s3 = render(ts, RenderContext(secret_hashes={"recsys-s3": "new"}))
    # Only the artifacts pods read the S3 keys: only they roll.
    assert config_hash(changed_s3, "recsys-artifacts") != config_hash(base, "recsys-artifacts")
    assert config_hash(changed_s3, "recsys") == config_hash(base, "recsys")
    changed_db = render(ts, RenderContext(secret_hashes={"recsys-db": "new"}))
    assert config_hash(changed_db, "recsys") != config_hash(base, "recsys")
    unrelated = render(ts, RenderContext(secret_hashes={"someone-else": "x"}))
    assert config_hash(unrelated, "recsys") == config_hash(base, "recsys")


def test_config_hash_follows_the_spec():
    ts = load_example("02-sqlite.yaml")
    base = config_hash(render(ts), "quickstart")
    ts["spec"]["workers"] = 3
    assert config_hash(render(ts), "quickstart") != base


def test_creating_a_generated_secret_does_not_roll_the_pods_twice():
    """Hash from the generated values (first pass) == hash from the Secret read back (later)."""
    ts = load_example("08-team.yaml")
    values = {"fraud-admin": {"username": "admin", "password": "p" * 32}, "fraud-flask-secret-key": {"secret-key": "k" * 43}}
    first = render(ts, RenderContext(generated_secrets=values))
    later = render(ts, RenderContext(secret_hashes={name: secret_data_hash(v) for name, v in values.items()}))
    assert config_hash(first, "fraud") == config_hash(later, "fraud")
    assert config_hash(render(ts), "fraud") != config_hash(later, "fraud")


def test_secret_data_hash_is_independent_of_order_and_encoding():
    assert secret_data_hash({"a": "1", "b": "2"}) == secret_data_hash({"b": b"2", "a": b"1"})
    assert secret_data_hash({"a": "1"}) != secret_data_hash({"a": "2"})
    assert secret_data_hash({"a": "1", "b": ""}) != secret_data_hash({"ab": "1"})


def test_fresh_secret_values_are_long_and_random():
    ts = load_trackingserver(load_example("08-team.yaml"))
    required = {s.name: s for s in required_generated_secrets(ts)}
    assert set(required) == {"fraud-admin", "fraud-flask-secret-key"}
    admin = fresh_secret_values(required["fraud-admin"])
    assert admin["username"] == "admin" and len(admin["password"]) >= 24
    key = fresh_secret_values(required["fraud-flask-secret-key"])
    assert len(key["secret-key"]) >= 16
    assert fresh_secret_values(required["fraud-admin"])["password"] != admin["password"]
    assert required_generated_secrets(load_trackingserver(load_example("02-sqlite.yaml"))) == []


def test_status_helpers():
    team = load_trackingserver(load_example("08-team.yaml"))
    assert client_url(team) == "https://mlflow.fraud.example.com"
    quick = load_trackingserver(load_example("02-sqlite.yaml"))
    assert client_url(quick) == "http://quickstart.ml-sandbox.svc:5000"
    assert status_selector(quick) == (
        "app.kubernetes.io/name=mlflow,app.kubernetes.io/instance=quickstart,app.kubernetes.io/component=tracking"
    )


@pytest.mark.parametrize(
    "quantity, nginx", [("5Gi", "5g"), ("512Mi", "512m"), ("64Ki", "64k"), ("2Ti", "2048g"), ("0", "0"), ("100", "100")]
)
def test_upload_size_in_nginx_syntax(quantity, nginx):
    assert nginx_size(quantity) == nginx


def test_pdb_only_for_several_pods():
    assert not of_kind(render(load_example("02-sqlite.yaml")), "PodDisruptionBudget")
    disabled = load_example("05-proxied.yaml")
    disabled["spec"]["podDisruptionBudget"] = {"enabled": False}
    assert not of_kind(render(disabled), "PodDisruptionBudget")
    percent = one(render(make(VALID_SPECS["autoscaled"])), "PodDisruptionBudget")
    assert percent["spec"]["minAvailable"] == "50%" and "maxUnavailable" not in percent["spec"]
