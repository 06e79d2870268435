"""Each MLflow deployment scenario renders to the right children with the right configuration."""
from __future__ import annotations

import base64
import fnmatch

import pytest
from mlflow_operator.constants import CONFIG_HASH_ANNOTATION, DEFAULT_IMAGE
from mlflow_operator.render import RenderContext, render

from .helpers import DATABASE, container, env, load_example, make, of_kind, one, pod_spec
from .spec_cases import VALID_SPECS


def kinds(manifests):
    return [m["kind"] for m in manifests]


def volume_names(workload):
    return {v["name"]: v for v in pod_spec(workload)["volumes"]}


def mounts(c):
    return {m["mountPath"]: m for m in c["volumeMounts"]}


# --- 1. file store -----------------------------------------------------------------------------


def test_file_store_runs_mlruns_on_the_volume_with_mlflows_opt_in():
    out = render(load_example("01-file-store.yaml"))
    assert kinds(out) == ["ServiceAccount", "PersistentVolumeClaim", "Deployment", "Service"]
    deploy = one(out, "Deployment", "legacy-mlruns")
    server = env(container(deploy))
    assert server["MLFLOW_OPERATOR_BACKEND_STORE_URI"] == "file:///data/mlruns"
    assert server["MLFLOW_ALLOW_FILE_STORE"] == "true"
    assert server["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"] == "/data/artifacts"
    # a file store has no schema to migrate: the check only (it reports the MLflow version)
    assert [c["name"] for c in pod_spec(deploy)["initContainers"]] == ["check"]
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"] == {"type": "Recreate"}
    assert one(out, "PersistentVolumeClaim")["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert "/data" in mounts(container(deploy))


# --- 2. embedded SQLite (the quickstart) -------------------------------------------------------


def test_quickstart_is_sqlite_on_a_volume_with_one_recreated_replica():
    out = render(load_example("02-sqlite.yaml"))
    assert kinds(out) == ["ServiceAccount", "PersistentVolumeClaim", "Deployment", "Service"]
    deploy = one(out, "Deployment", "quickstart")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    server = container(deploy)
    assert server["image"] == DEFAULT_IMAGE
    assert server["command"] == ["mlflow-entrypoint", "serve"]
    e = env(server)
    assert e["MLFLOW_OPERATOR_ROLE"] == "tracking"
    assert e["MLFLOW_OPERATOR_BACKEND_STORE_URI"] == "sqlite:////data/mlflow.db"
    assert e["MLFLOW_OPERATOR_SERVE_ARTIFACTS"] == "true"
    assert e["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"] == "/data/artifacts"
    assert e["MLFLOW_OPERATOR_HOST"] == "0.0.0.0" and e["MLFLOW_OPERATOR_PORT"] == "5000"
    assert e["MLFLOW_OPERATOR_WORKERS"] == "2"
    assert e["MLFLOW_OPERATOR_AUTH"] == "none"
    assert "MLFLOW_OPERATOR_CORS_ALLOWED_ORIGINS" not in e  # nothing exposed: localhost only
    # The SQLite schema is migrated in the pod itself, on its own volume, before the server.
    migrate = container(deploy, "migrate", init=True)
    assert migrate["command"] == ["mlflow-entrypoint", "migrate"]
    assert env(migrate) == {"MLFLOW_OPERATOR_BACKEND_STORE_URI": "sqlite:////data/mlflow.db"}
    assert "/data" in mounts(migrate)
    assert not of_kind(out, "Job")
    pvc = one(out, "PersistentVolumeClaim", "quickstart-data")
    assert pvc["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}
    assert volume_names(deploy)["data"]["persistentVolumeClaim"]["claimName"] == "quickstart-data"
    service = one(out, "Service", "quickstart")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 5000, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "tracking"


def test_server_container_contract():
    deploy = one(render(load_example("02-sqlite.yaml")), "Deployment")
    server = container(deploy)
    assert server["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": "/health", "port": "http"}
    # readiness asks the database too (the image's /readyz): an outage unreadies, never restarts
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert mounts(server)["/tmp"]["name"] == "tmp"
    assert volume_names(deploy)["tmp"] == {"name": "tmp", "emptyDir": {}}
    pod = pod_spec(deploy)
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "quickstart"
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsGroup"] == 10001
    assert server["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    e = env(server)
    # Prometheus scrapes pod IPs: the entrypoint allows the pod's own, bracketing IPv6 ones
    assert e["MLFLOW_OPERATOR_POD_IPS"] == ("field", "status.podIPs")
    hosts = e["MLFLOW_OPERATOR_ALLOWED_HOSTS"].split(",")
    for host in ("quickstart", "quickstart.ml-sandbox", "quickstart.ml-sandbox.svc",
                 "quickstart.ml-sandbox.svc.cluster.local"):
        assert host in hosts and f"{host}:5000" in hosts
    assert {"localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*"} <= set(hosts)  # port-forward to any local port
    assert "$(" not in e["MLFLOW_OPERATOR_ALLOWED_HOSTS"]  # nothing left for the kubelet to expand


# --- 3. dedicated server, local artifacts, Ingress --------------------------------------------


def test_local_artifacts_behind_an_nginx_ingress():
    out = render(load_example("03-local-artifacts.yaml"))
    deploy = one(out, "Deployment", "vision")
    e = env(container(deploy))
    assert e["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"] == "/data/artifacts"
    assert e["MLFLOW_OPERATOR_WORKERS"] == "4"
    assert e["MLFLOW_OPERATOR_CORS_ALLOWED_ORIGINS"] == "https://mlflow.vision.example.com"
    assert "mlflow.vision.example.com" in e["MLFLOW_OPERATOR_ALLOWED_HOSTS"].split(",")
    assert container(deploy)["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}
    pvc = one(out, "PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == "fast-ssd"
    ingress = one(out, "Ingress", "vision")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "10g"
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "1800"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "1800"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["mlflow.vision.example.com"], "secretName": "mlflow-vision-tls"}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "mlflow.vision.example.com"
    assert rule["http"]["paths"] == [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "vision", "port": {"name": "http"}}}}
    ]


# --- 4. remote backend, direct artifact access -------------------------------------------------


def test_remote_database_and_direct_s3():
    out = render(load_example("04-remote-direct.yaml"))
    assert kinds(out) == ["ServiceAccount", "Job", "Deployment", "Service", "PodDisruptionBudget"]
    deploy = one(out, "Deployment", "forecast")
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    e = env(container(deploy))
    assert e["MLFLOW_OPERATOR_BACKEND_STORE_URI"] == ("secret", "forecast-db", "uri")
    assert e["MLFLOW_OPERATOR_SERVE_ARTIFACTS"] == "false"
    assert e["MLFLOW_OPERATOR_DEFAULT_ARTIFACT_ROOT"] == "s3://acme-ml-artifacts/forecast"
    assert "MLFLOW_OPERATOR_ARTIFACTS_DESTINATION" not in e
    # The server keeps read access so the web UI can show artifacts.
    assert e["AWS_ACCESS_KEY_ID"] == ("secret", "forecast-s3", "access-key-id")
    assert e["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert "/data" not in mounts(container(deploy))
    assert not of_kind(out, "PersistentVolumeClaim")
    check = container(deploy, "check", init=True)
    assert check["command"] == ["mlflow-entrypoint", "check", "--init", "--termination-message", "/dev/termination-log"]
    assert env(check)["MLFLOW_OPERATOR_BACKEND_STORE_URI"] == ("secret", "forecast-db", "uri")
    assert env(check)["MLFLOW_OPERATOR_BACKEND_WAIT_SECONDS"] == "60"
    assert [c["name"] for c in pod_spec(deploy)["initContainers"]] == ["check"]
    job = one(out, "Job")
    assert job["metadata"]["name"].startswith("forecast-migrate-") and len(job["metadata"]["name"]) == 25
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migration"
    assert pod_spec(job)["restartPolicy"] == "Never"
    migrate = container(job, "migrate")
    assert migrate["command"] == ["mlflow-entrypoint", "migrate"]
    assert env(migrate) == {"MLFLOW_OPERATOR_BACKEND_STORE_URI": ("secret", "forecast-db", "uri")}
    pdb = one(out, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "tracking"


def test_migration_job_name_follows_image_and_database():
    base = load_example("04-remote-direct.yaml")
    first = one(render(base), "Job")["metadata"]["name"]
    assert one(render(base), "Job")["metadata"]["name"] == first
    base["spec"]["image"] = "registry.example.com/mlflow-server:3.19.0"
    assert one(render(base), "Job")["metadata"]["name"] != first
    # A new URI in the database Secret may be a new, empty database: migrate again.
    bumped = one(render(base), "Job")["metadata"]["name"]
    other_db = RenderContext(secret_hashes={"forecast-db": "another-uri"})
    assert one(render(base, other_db), "Job")["metadata"]["name"] != bumped
    # The S3 keys are not the migration's business.
    other_keys = RenderContext(secret_hashes={"forecast-s3": "rotated"})
    assert one(render(base, other_keys), "Job")["metadata"]["name"] == bumped


# --- 5. proxied artifact access -----------------------------------------------------------------


def test_proxied_artifacts_with_s3_compatible_endpoint_and_metrics():
    out = render(load_example("05-proxied.yaml"))
    deploy = one(out, "Deployment", "nlp")
    e = env(container(deploy))
    assert e["MLFLOW_OPERATOR_SERVE_ARTIFACTS"] == "true"
    assert e["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"] == "s3://mlflow-nlp/artifacts"
    assert e["MLFLOW_S3_ENDPOINT_URL"] == "http://object-store.storage.svc:9000"
    assert e["AWS_SECRET_ACCESS_KEY"] == ("secret", "nlp-object-store", "secret-access-key")
    assert e["MLFLOW_OPERATOR_EXPOSE_PROMETHEUS"] == "true"
    assert "MLFLOW_S3_IGNORE_TLS" not in e
    assert not of_kind(out, "PersistentVolumeClaim")
    monitor = one(out, "ServiceMonitor", "nlp")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": "nlp"
    }


# --- 6. artifacts only --------------------------------------------------------------------------


def test_artifacts_only_server_with_gcs_key_file():
    out = render(load_example("06-artifacts-only.yaml"))
    assert kinds(out) == ["ServiceAccount", "Deployment", "Service", "PodDisruptionBudget"]
    deploy = one(out, "Deployment", "gcs-artifacts")
    server = container(deploy)
    e = env(server)
    assert e["MLFLOW_OPERATOR_ROLE"] == "artifacts"
    assert e["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"] == "gs://acme-ml-shared-artifacts/mlflow"
    assert not any(name.endswith("STORE_URI") for name in e)  # MLflow refuses a backend here
    assert e["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/run/secrets/mlflow-operator/gcs/credentials.json"
    assert volume_names(deploy)["gcs-credentials"]["secret"] == {
        "secretName": "gcs-writer", "items": [{"key": "key.json", "path": "credentials.json"}]
    }
    assert mounts(server)["/var/run/secrets/mlflow-operator/gcs"]["readOnly"] is True
    # the check lists the bucket with the same key file
    assert [c["name"] for c in pod_spec(deploy)["initContainers"]] == ["check"]
    assert mounts(container(deploy, "check", init=True)) == mounts(server)


def test_gcs_compatible_endpoint_is_storage_emulator_host_without_a_key_file():
    ts = load_example("06-artifacts-only.yaml")
    ts["spec"]["artifacts"]["gcs"] = {"endpointUrl": "http://fake-gcs.storage.svc:4443"}
    deploy = one(render(ts), "Deployment", "gcs-artifacts")
    for c in (container(deploy), container(deploy, "check", init=True)):  # the check lists the same endpoint
        e = env(c)
        assert e["STORAGE_EMULATOR_HOST"] == "http://fake-gcs.storage.svc:4443"
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in e
    assert "gcs-credentials" not in volume_names(deploy)


# --- 6b. split: metadata pods + artifacts-only pods behind one endpoint -------------------------


def test_split_metadata_pods_hold_no_storage_credentials():
    out = render(load_example("07-split.yaml"))
    assert kinds(out) == [
        "ServiceAccount", "Job", "Deployment", "Deployment", "Service", "Service", "Ingress",
        "PodDisruptionBudget", "PodDisruptionBudget",
    ]
    metadata = one(out, "Deployment", "recsys")
    artifacts = one(out, "Deployment", "recsys-artifacts")
    m = env(container(metadata))
    assert m["MLFLOW_OPERATOR_ROLE"] == "tracking"
    assert m["MLFLOW_OPERATOR_SERVE_ARTIFACTS"] == "true"
    assert m["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"] == (
        "http://recsys-artifacts.ml-recsys.svc:5000/api/2.0/mlflow-artifacts/artifacts"
    )
    assert not [k for k in m if k.startswith(("AWS_", "MLFLOW_S3_", "GOOGLE_", "AZURE_"))]
    metadata_secrets = {v[1] for v in m.values() if isinstance(v, tuple) and v[0] == "secret"}
    assert metadata_secrets == {"recsys-db"}
    a = env(container(artifacts))
    assert a["MLFLOW_OPERATOR_ROLE"] == "artifacts"
    assert a["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"] == "s3://acme-ml-recsys/mlflow"
    assert a["AWS_ACCESS_KEY_ID"] == ("secret", "recsys-s3", "access-key-id")
    assert not any(name.endswith("STORE_URI") for name in a)
    assert artifacts["spec"]["replicas"] == 3 and metadata["spec"]["replicas"] == 2
    assert container(artifacts)["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
    assert artifacts["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "artifacts"
    assert one(out, "Service", "recsys-artifacts")["spec"]["selector"]["app.kubernetes.io/component"] == "artifacts"
    hosts = a["MLFLOW_OPERATOR_ALLOWED_HOSTS"].split(",")
    assert "recsys-artifacts.ml-recsys.svc:5000" in hosts and "mlflow.recsys.example.com" in hosts


def test_split_ingress_routes_artifact_api_to_artifacts_pods():
    ingress = one(render(load_example("07-split.yaml")), "Ingress")
    paths = {(p["path"], p["backend"]["service"]["name"]) for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert paths == {
        ("/api/2.0/mlflow-artifacts", "recsys-artifacts"),
        ("/ajax-api/2.0/mlflow-artifacts", "recsys-artifacts"),
        ("/", "recsys"),
    }


def test_split_httproute_routes_artifact_api_to_artifacts_pods():
    out = render(make(VALID_SPECS["split-azure-gateway"], name="cv"))
    route = one(out, "HTTPRoute", "cv")
    assert route["spec"]["parentRefs"] == [{"name": "gw"}]
    assert route["spec"]["hostnames"] == ["mlflow.example.com"]
    rules = {r["backendRefs"][0]["name"]: r for r in route["spec"]["rules"]}
    assert [m["path"] for m in rules["cv-artifacts"]["matches"]] == [
        {"type": "PathPrefix", "value": "/api/2.0/mlflow-artifacts"},
        {"type": "PathPrefix", "value": "/ajax-api/2.0/mlflow-artifacts"},
    ]
    assert rules["cv"]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert all(r["backendRefs"][0]["port"] == 5000 for r in rules.values())
    assert all(r["timeouts"] == {"request": "600s"} for r in rules.values())
    for name in ("cv", "cv-artifacts"):
        e = env(container(one(out, "Deployment", name)))
        assert e["MLFLOW_OPERATOR_AUTH"] == "none"
        assert e["MLFLOW_OPERATOR_CORS_ALLOWED_ORIGINS"] == "https://mlflow.example.com,http://mlflow.example.com"
    artifacts_env = env(container(one(out, "Deployment", "cv-artifacts")))
    metadata_env = env(container(one(out, "Deployment", "cv")))
    assert artifacts_env["AZURE_STORAGE_ACCESS_KEY"] == ("secret", "az", "key")
    assert "AZURE_STORAGE_ACCESS_KEY" not in metadata_env


def test_split_with_local_destination_mounts_the_volume_on_artifacts_pods_only():
    out = render(make(VALID_SPECS["split-volume"]))
    assert one(out, "PersistentVolumeClaim")
    assert "/data" in mounts(container(one(out, "Deployment", "team-artifacts")))
    assert "/data" not in mounts(container(one(out, "Deployment", "team")))
    assert one(out, "Deployment", "team-artifacts")["spec"]["strategy"] == {"type": "Recreate"}


# --- a team's server: basic auth, PostgreSQL, S3, Ingress ---------------------------------------


def test_team_server_with_basic_auth():
    out = render(load_example("08-team.yaml"))
    deploy = one(out, "Deployment", "fraud")
    e = env(container(deploy))
    assert e["MLFLOW_OPERATOR_AUTH"] == "basic"
    assert e["MLFLOW_OPERATOR_AUTH_DATABASE_URI"] == ("secret", "fraud-mlflow-db", "auth-uri")
    assert e["MLFLOW_OPERATOR_ADMIN_USERNAME"] == ("secret", "fraud-admin", "username")
    assert e["MLFLOW_OPERATOR_ADMIN_PASSWORD"] == ("secret", "fraud-admin", "password")
    assert e["MLFLOW_FLASK_SERVER_SECRET_KEY"] == ("secret", "fraud-flask-secret-key", "secret-key")
    job = one(out, "Job")
    assert env(container(job, "migrate")) == {
        "MLFLOW_OPERATOR_BACKEND_STORE_URI": ("secret", "fraud-mlflow-db", "tracking-uri"),
        "MLFLOW_OPERATOR_AUTH_DATABASE_URI": ("secret", "fraud-mlflow-db", "auth-uri"),
    }
    assert not of_kind(out, "Secret")  # random values come from the reconciler, not the renderer
    ingress = one(out, "Ingress")
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "2g"
    policy = one(out, "NetworkPolicy", "fraud")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": "http"}, {"protocol": "TCP", "port": "metrics"}]  # Prometheus scrapes 9090
    assert rule["from"][0] == {"podSelector": {}}
    assert rule["from"][1]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}
    assert pod_spec(deploy)["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"


def test_generated_secrets_are_rendered_from_given_values_only():
    ts = load_example("08-team.yaml")
    values = {
        "fraud-admin": {"username": "admin", "password": "p" * 32},
        "fraud-flask-secret-key": {"secret-key": "k" * 43},
    }
    out = render(ts, RenderContext(generated_secrets=values))
    admin = one(out, "Secret", "fraud-admin")
    assert base64.b64decode(admin["data"]["password"]).decode() == "p" * 32
    assert admin["immutable"] is True
    assert one(out, "Secret", "fraud-flask-secret-key")["data"]["secret-key"] == base64.b64encode(b"k" * 43).decode()
    only_key = render(ts, RenderContext(generated_secrets={"fraud-flask-secret-key": {"secret-key": "k"}}))
    assert [m["metadata"]["name"] for m in of_kind(only_key, "Secret")] == ["fraud-flask-secret-key"]
    with pytest.raises(ValueError, match="lacks"):
        render(ts, RenderContext(generated_secrets={"fraud-admin": {"username": "admin"}}))


def test_user_admin_secret_replaces_the_generated_one():
    out = render(make(VALID_SPECS["volume-basic-auth-admin-ref"]), RenderContext(
        generated_secrets={"team-admin": {"username": "a", "password": "b"}, "team-flask-secret-key": {"secret-key": "k"}}
    ))
    assert [m["metadata"]["name"] for m in of_kind(out, "Secret")] == ["team-flask-secret-key"]
    e = env(container(one(out, "Deployment")))
    assert e["MLFLOW_OPERATOR_ADMIN_PASSWORD"] == ("secret", "admin", "password")
    assert e["MLFLOW_OPERATOR_AUTH_DATABASE_URI"] == "sqlite:////data/auth.db"


def test_embedded_sqlite_with_basic_auth_migrates_both_databases_in_the_pod():
    deploy = one(render(make(VALID_SPECS["sqlite-basic-auth"])), "Deployment")
    assert env(container(deploy, "migrate", init=True)) == {
        "MLFLOW_OPERATOR_BACKEND_STORE_URI": "sqlite:////data/mlflow.db",
        "MLFLOW_OPERATOR_AUTH_DATABASE_URI": "sqlite:////data/auth.db",
    }


def test_external_backend_with_sqlite_auth_splits_the_migrations():
    out = render(make({"backendStore": DATABASE, "artifacts": {"destination": "s3://bucket"}, "auth": {"type": "Basic"}}))
    assert env(container(one(out, "Job"), "migrate")) == {"MLFLOW_OPERATOR_BACKEND_STORE_URI": ("secret", "db", "uri")}
    deploy = one(out, "Deployment")
    assert [c["name"] for c in pod_spec(deploy)["initContainers"]] == ["migrate", "check"]
    assert env(container(deploy, "migrate", init=True)) == {"MLFLOW_OPERATOR_AUTH_DATABASE_URI": "sqlite:////data/auth.db"}
    assert one(out, "PersistentVolumeClaim")  # the auth database lives on the volume


# --- Gateway API, autoscaling, Azure -----------------------------------------------------------


def test_gateway_route_with_autoscaling():
    out = render(load_example("09-gateway-azure.yaml"))
    deploy = one(out, "Deployment", "speech")
    assert "replicas" not in deploy["spec"]  # the HPA owns the count
    hpa = one(out, "HorizontalPodAutoscaler", "speech")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "speech"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert one(out, "PodDisruptionBudget")
    route = one(out, "HTTPRoute", "speech")
    assert route["spec"]["parentRefs"] == [{"name": "shared-gateway", "namespace": "gateway-system", "sectionName": "https"}]
    e = env(container(deploy))
    assert e["AZURE_STORAGE_CONNECTION_STRING"] == ("secret", "speech-azure", "connection-string")
    assert e["MLFLOW_OPERATOR_CORS_ALLOWED_ORIGINS"] == "https://mlflow.speech.example.com"
    assert e["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"] == "wasbs://mlflow@acmespeech.blob.core.windows.net/artifacts"


# --- pod overrides ------------------------------------------------------------------------------


def test_pod_overrides_reach_the_pods_without_touching_operator_fields():
    out = render(make(VALID_SPECS["pod-overrides"]))
    deploy = one(out, "Deployment")
    pod = pod_spec(deploy)
    assert pod["nodeSelector"] == {"pool": "ml"}
    assert pod["tolerations"][0]["key"] == "ml"
    assert pod["affinity"] == {"nodeAffinity": {}}
    assert pod["priorityClassName"] == "high"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["securityContext"]["runAsUser"] == 2000
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "Localhost", "localhostProfile": "profiles/mlflow.json"}
    template = deploy["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "a" and template["annotations"]["a"] == "b"
    assert CONFIG_HASH_ANNOTATION in template["annotations"]
    server = container(deploy)
    assert server["env"][-2:] == [
        {"name": "MLFLOW_S3_UPLOAD_EXTRA_ARGS", "value": '{"ServerSideEncryption": "AES256"}'},
        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "x", "key": "token"}}},
    ]
    assert server["image"].startswith("registry.example.com/mlflow-server@sha256:")
    assert "app.kubernetes.io/version" not in deploy["metadata"]["labels"]  # a digest is no version


def test_overrides_of_hosts_and_origins_replace_the_derived_lists():
    e = env(container(one(render(make(VALID_SPECS["metrics-networkpolicy"])), "Deployment")))
    assert e["MLFLOW_OPERATOR_ALLOWED_HOSTS"] == "*"
    assert "MLFLOW_OPERATOR_POD_IPS" not in e  # the spec's list is taken as written
    assert e["MLFLOW_OPERATOR_CORS_ALLOWED_ORIGINS"] == "https://nb.example.com"


def test_unlimited_upload_size_and_service_settings():
    out = render(make({**VALID_SPECS["metrics-networkpolicy"],
                       "service": {"type": "LoadBalancer", "annotations": {"lb": "internal"}},
                       "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}}}))
    assert one(out, "Ingress")["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    service = one(out, "Service")
    assert service["spec"]["type"] == "LoadBalancer" and service["metadata"]["annotations"] == {"lb": "internal"}
    account = one(out, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:")


def _allowed(hosts: list[str], host: str) -> bool:
    """MLflow's matching (mlflow.server.security_utils): fnmatch for a pattern, equality otherwise."""
    return any(fnmatch.fnmatchcase(host, h) if "*" in h else host == h for h in hosts)


@pytest.mark.parametrize("host, allowed", [
    ("localhost:5000", True), ("localhost:8080", True), ("localhost:49152", True), ("localhost", True),
    ("127.0.0.1:31337", True), ("[::1]:8080", True), ("[::1]", True),
    ("10.96.0.15:5000", True), ("172.20.4.1:5000", True), ("192.168.49.2:30080", True),  # ClusterIPs, pods
    ("[fd00:10:96::a]:5000", True), ("[fc12:3456::1]:5000", True),
    ("quickstart.ml-sandbox.svc.cluster.local:5000", True),
    ("172.32.0.1:5000", False), ("8.8.8.8:5000", False), ("[2001:db8::1]:5000", False), ("[fc::1]:5000", False),
    ("evil.example:5000", False), ("localhost.evil.example", False), ("quickstart.ml-sandbox.svc.evil:5000", False),
])
def test_default_allowed_hosts_take_port_forwards_and_private_addresses_like_stock_mlflow(host, allowed):
    hosts = env(container(one(render(load_example("02-sqlite.yaml")), "Deployment")))["MLFLOW_OPERATOR_ALLOWED_HOSTS"]
    assert _allowed(hosts.split(","), host) is allowed


def test_cluster_domain_and_default_image_come_from_the_operator():
    ts = load_example("02-sqlite.yaml")
    out = render(ts, RenderContext(cluster_domain="corp.internal", default_image="mirror.corp/mlflow-server:3.18.0"))
    deploy = one(out, "Deployment")
    hosts = env(container(deploy))["MLFLOW_OPERATOR_ALLOWED_HOSTS"].split(",")
    assert "quickstart.ml-sandbox.svc.corp.internal:5000" in hosts
    assert not any("cluster.local" in h for h in hosts)
    assert container(deploy)["image"] == "mirror.corp/mlflow-server:3.18.0"
    assert deploy["metadata"]["labels"]["app.kubernetes.io/version"] == "3.18.0"
    # a spec's own image wins over the operator's default
    pinned = make({"image": "registry.example.com/mlflow-server:3.17.2"})
    assert container(one(render(pinned, RenderContext(default_image="mirror.corp/x:1")), "Deployment"))["image"] == \
        "registry.example.com/mlflow-server:3.17.2"
