"""spec.auth.type OIDC: what the operator renders (pure). The sign-in itself runs against a real
provider in tests/workload/test_server_oidc.py."""
from __future__ import annotations

import base64

import pytest

from mlflow_operator.render import RenderContext, fresh_secret_values, render, required_generated_secrets
from mlflow_operator.api import load_trackingserver

pytestmark = pytest.mark.unit

OIDC = {"issuerUrl": "https://dex.example.com/dex", "clientId": "mlflow",
        "clientSecret": {"secretKeyRef": {"name": "sso", "key": "secret"}}}


def ts(oidc: dict | None = None, **spec) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
            "metadata": {"name": "team", "namespace": "ml", "uid": "u-1"},
            "spec": {"auth": {"type": "OIDC", "oidc": {**OIDC, **(oidc or {})}}, **spec}}


def pod(manifests: list[dict], name: str = "team") -> dict:
    [deployment] = [m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == name]
    return deployment["spec"]["template"]["spec"]


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_proxy_takes_the_api_port_and_the_server_listens_on_loopback():
    spec = pod(render(ts()))
    server, proxy = spec["containers"]
    assert (server["name"], proxy["name"]) == ("mlflow", "oauth2-proxy")
    assert proxy["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]
    assert "ports" not in server  # the Service's targetPort `http` is the proxy's
    env = env_of(server)
    assert env["MLFLOW_OPERATOR_HOST"] == "127.0.0.1" and env["MLFLOW_OPERATOR_PORT"] == "5001"
    assert env["MLFLOW_OPERATOR_AUTH"] == "oidc" and "MLFLOW_OPERATOR_OIDC_ADMIN_GROUP" not in env
    assert "--upstream=http://127.0.0.1:5001/" in proxy["args"]
    assert "--http-address=0.0.0.0:5000" in proxy["args"]
    # probes: the server's own from inside its container, the pod's readiness through the proxy
    assert server["livenessProbe"]["exec"]["command"] == ["mlflow-entrypoint", "probe", "/health"]
    assert "httpGet" not in server["startupProbe"]
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"--skip-auth-route=GET=^/health$", "--skip-auth-route=GET=^/readyz$"} <= set(proxy["args"])
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
    assert proxy["image"] == "quay.io/oauth2-proxy/oauth2-proxy:v7.15.6"


def test_secrets_are_referenced_never_written_into_the_pod():
    spec = pod(render(ts()))
    proxy = spec["containers"][1]
    env = env_of(proxy)
    assert env["OAUTH2_PROXY_CLIENT_SECRET"] == {"secretKeyRef": {"name": "sso", "key": "secret"}}
    assert env["OAUTH2_PROXY_COOKIE_SECRET"] == {"secretKeyRef": {"name": "team-oidc", "key": "cookie-secret"}}
    assert not any("secret=" in a.lower() for a in proxy["args"])


def test_the_cookie_secret_is_generated_once_and_decodes_to_an_aes_256_key():
    model = load_trackingserver(ts())
    [secret] = required_generated_secrets(model)
    assert secret.name == "team-oidc"
    values = fresh_secret_values(secret)
    assert len(base64.urlsafe_b64decode(values["cookie-secret"])) == 32
    assert fresh_secret_values(secret) != values
    rendered = [m for m in render(model, RenderContext(generated_secrets={"team-oidc": values}))
                if m["kind"] == "Secret"]
    assert [m["metadata"]["name"] for m in rendered] == ["team-oidc"] and rendered[0]["immutable"] is True
    # an existing Secret (no fresh values passed) is never rendered, so never overwritten
    assert not [m for m in render(model) if m["kind"] == "Secret"]


def test_groups_admin_group_and_redirect_from_the_ingress_host():
    spec = pod(render(ts({"allowedGroups": ["ml", "/org/data"], "adminGroup": "ml-admins"},
                         ingress={"hosts": ["mlflow.team.example.com"], "tlsSecretName": "team-tls"})))
    server, proxy = spec["containers"]
    args = proxy["args"]
    assert [a for a in args if a.startswith("--allowed-group=")] == [
        "--allowed-group=ml", "--allowed-group=/org/data", "--allowed-group=ml-admins"]
    assert "--redirect-url=https://mlflow.team.example.com/oauth2/callback" in args
    assert "--cookie-secure=true" in args and "--skip-jwt-bearer-tokens=true" in args
    assert env_of(server)["MLFLOW_OPERATOR_OIDC_ADMIN_GROUP"] == "ml-admins"


def test_without_groups_every_signed_in_user_passes_and_without_a_host_the_redirect_follows_the_request():
    args = pod(render(ts()))["containers"][1]["args"]
    assert not [a for a in args if a.startswith("--allowed-group=")]
    assert not [a for a in args if a.startswith("--redirect-url=")]
    assert "--cookie-secure=false" in args  # kubectl port-forward is plain http


def test_a_private_ca_is_mounted_into_the_proxy_only():
    spec = pod(render(ts({"caConfigMapRef": {"name": "corp-ca", "key": "root.pem"}})))
    server, proxy = spec["containers"]
    assert {"name": "oidc-ca", "configMap": {"name": "corp-ca", "items": [{"key": "root.pem", "path": "ca.crt"}]}} in spec["volumes"]
    assert proxy["volumeMounts"] == [{"name": "oidc-ca", "mountPath": "/etc/mlflow-operator/oidc-ca", "readOnly": True}]
    assert "--provider-ca-file=/etc/mlflow-operator/oidc-ca/ca.crt" in proxy["args"]
    assert all(m["name"] != "oidc-ca" for m in server["volumeMounts"])


def test_metrics_stay_scrapable_on_the_pod_ip():
    server = pod(render(ts(metrics={"enabled": True})))["containers"][0]
    assert server["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    assert env_of(server)["MLFLOW_OPERATOR_METRICS_HOST"] == "0.0.0.0"


def test_the_request_log_leaves_out_the_uri_which_carries_the_authorization_code():
    [fmt] = [a for a in pod(render(ts()))["containers"][1]["args"] if a.startswith("--request-logging-format=")]
    assert "RequestURI" not in fmt


def split(**oidc) -> dict:
    return ts(oidc, backendStore={"type": "Database", "uri": {"secretKeyRef": {"name": "db", "key": "uri"}}},
              artifacts={"mode": "Split", "destination": "s3://mlflow-artifacts/team"})


def test_split_puts_the_sidecar_before_the_artifacts_pods_and_lets_the_tracking_pods_in_with_a_credential():
    manifests = render(split(allowedGroups=["ml"]))
    tracking_server, tracking_proxy = pod(manifests, "team")["containers"]
    artifacts = pod(manifests, "team-artifacts")
    artifacts_server, artifacts_proxy = artifacts["containers"]
    assert env_of(artifacts_server)["MLFLOW_OPERATOR_HOST"] == "127.0.0.1"
    assert artifacts_proxy["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]
    env = env_of(tracking_server)
    assert env["MLFLOW_TRACKING_USERNAME"] == "mlflow-tracking-pods"
    assert env["MLFLOW_TRACKING_PASSWORD"] == {"secretKeyRef": {"name": "team-oidc-internal", "key": "password"}}
    assert "MLFLOW_TRACKING_PASSWORD" not in env_of(artifacts_server)
    args = artifacts_proxy["args"]
    assert "--htpasswd-file=/etc/mlflow-operator/oidc-internal/htpasswd" in args
    assert "--allowed-group=mlflow-operator:tracking-pods" in args  # the credential's group, here only
    assert not any("htpasswd" in a or "tracking-pods" in a for a in tracking_proxy["args"])
    assert {"name": "oidc-internal", "secret": {"secretName": "team-oidc-internal",
                                                "items": [{"key": "htpasswd", "path": "htpasswd"}]}} in artifacts["volumes"]


def test_the_internal_credential_is_generated_once_with_its_htpasswd_line():
    import hashlib

    [cookie, internal] = required_generated_secrets(load_trackingserver(split()))
    assert (cookie.name, internal.name) == ("team-oidc", "team-oidc-internal")
    values = fresh_secret_values(internal)
    user, _, hashed = values["htpasswd"].strip().partition(":")
    assert user == "mlflow-tracking-pods"
    assert hashed == "{SHA}" + base64.b64encode(hashlib.sha1(values["password"].encode()).digest()).decode()
