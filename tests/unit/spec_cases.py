"""TrackingServer specs for the validation tests: valid ones, and invalid ones with the rule (or
schema error) that must reject them. The CEL test and the API-server test reuse them."""
from __future__ import annotations

from typing import Any

from .helpers import AUTH_DB, DATABASE, DB, make

S3 = "s3://bucket/mlflow"
INGRESS = {"className": "nginx", "hosts": ["mlflow.example.com"]}
GATEWAY = {"parentRefs": [{"name": "gw"}]}
OIDC = {"issuerUrl": "https://dex.example.com", "clientId": "mlflow",
        "clientSecret": {"secretKeyRef": {"name": "oidc", "key": "secret"}}}

# name -> spec; each is valid.
VALID_SPECS: dict[str, dict[str, Any]] = {
    "empty": {},
    "sqlite-basic-auth": {"auth": {"type": "Basic"}},
    "kubernetes-auth": {"auth": {"type": "Kubernetes"}},
    "oidc-auth": {"auth": {"type": "OIDC", "oidc": OIDC}},
    "oidc-auth-split": {"backendStore": DATABASE, "artifacts": {"mode": "Split", "destination": S3},
                        "auth": {"type": "OIDC", "oidc": OIDC}},
    "oidc-auth-artifacts-only": {"artifacts": {"mode": "ArtifactsOnly", "destination": S3},
                                 "auth": {"type": "OIDC", "oidc": OIDC}},
    "oidc-auth-replicas": {
        "backendStore": DATABASE, "artifacts": {"destination": S3}, "replicas": 3,
        "auth": {"type": "OIDC", "oidc": {**OIDC, "allowedGroups": ["ml"], "adminGroup": "ml-admins"}},
    },
    "kubernetes-auth-audience": {
        "backendStore": DATABASE, "artifacts": {"destination": S3}, "replicas": 2,
        "auth": {"type": "Kubernetes", "kubernetes": {"audience": "https://mlflow.example.com"}},
    },
    "filestore": {"backendStore": {"type": "FileStore"}},
    "database-local-artifacts-rwx": {
        "backendStore": DATABASE,
        "replicas": 3,
        "storage": {"accessModes": ["ReadWriteMany"]},
    },
    "database-proxied-s3": {
        "backendStore": {**DATABASE, "registryStoreUri": {"secretKeyRef": {"name": "db", "key": "registry"}}},
        "replicas": 2,
        "artifacts": {"destination": S3, "s3": {"endpointUrl": "https://s3.example.com:9000", "ignoreTls": True}},
    },
    "direct-gcs": {"artifacts": {"mode": "Direct", "defaultArtifactRoot": "gs://bucket"}},
    "gcs-compatible-endpoint": {"artifacts": {"destination": "gs://bucket/mlflow",
                                              "gcs": {"endpointUrl": "http://fake-gcs.storage.svc:4443"}}},
    "volume-basic-auth-admin-ref": {
        "artifacts": {"destination": "/data/artifacts"},
        "auth": {"type": "Basic", "adminSecretRef": {"name": "admin"}},
    },
    "split-volume": {
        "backendStore": DATABASE,
        "artifacts": {"mode": "Split", "destination": "/data/artifacts"},
    },
    "split-azure-gateway": {
        "backendStore": DATABASE,
        "replicas": 2,
        "artifacts": {
            "mode": "Split",
            "destination": "wasbs://c@acct.blob.core.windows.net/mlflow",
            "replicas": 2,
            "azure": {"accessKey": {"secretKeyRef": {"name": "az", "key": "key"}}},
        },
        "gateway": {**GATEWAY, "hostnames": ["mlflow.example.com"], "tls": False},
    },
    "autoscaled": {
        "backendStore": DATABASE,
        "artifacts": {"destination": "wasbs://c@acct.blob.core.windows.net/x"},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 2},
        "podDisruptionBudget": {"minAvailable": "50%"},
    },
    "pod-overrides": {
        "podTemplate": {
            "labels": {"team": "a"},
            "annotations": {"a": "b"},
            "nodeSelector": {"pool": "ml"},
            "tolerations": [{"key": "ml", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {}},
            "priorityClassName": "high",
            "extraEnv": [
                {"name": "MLFLOW_S3_UPLOAD_EXTRA_ARGS", "value": '{"ServerSideEncryption": "AES256"}'},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "x", "key": "token"}}},
            ],
            "securityContext": {
                "runAsUser": 2000,
                "runAsGroup": 2000,
                "fsGroup": 2000,
                "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/mlflow.json"},
            },
        },
        "imagePullSecrets": [{"name": "regcred"}],
        "image": "registry.example.com/mlflow-server@sha256:" + "a" * 64,
    },
    "metrics-networkpolicy": {
        "metrics": {"enabled": True, "serviceMonitor": {"enabled": True, "interval": "15s"}},
        "networkPolicy": {"enabled": True},
        "ingress": {**INGRESS, "tlsSecretName": "tls"},
        "http": {"maxUploadSize": "0", "allowedHosts": ["*"], "corsAllowedOrigins": ["https://nb.example.com"]},
        "retentionPolicy": "Delete",
    },
}

# name -> (spec, rule names expected to fail, in rule order)
RULE_CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "sqlite-two-replicas": ({"replicas": 2}, ["embedded-single-replica"]),
    "filestore-two-replicas": ({"replicas": 2, "backendStore": {"type": "FileStore"}}, ["embedded-single-replica"]),
    "sqlite-autoscaling": ({"autoscaling": {"maxReplicas": 3}}, ["embedded-no-autoscaling"]),
    "database-without-uri": ({"backendStore": {"type": "Database"}}, ["database-needs-uri"]),
    "sqlite-with-uri": ({"backendStore": {"type": "SQLite", "uri": DB}}, ["embedded-no-uri"]),
    "artifacts-only-with-backend": (
        {"backendStore": DATABASE, "artifacts": {"mode": "ArtifactsOnly", "destination": S3}},
        ["artifacts-only-no-backend"],
    ),
    "split-sqlite-local-artifacts": (
        {"artifacts": {"mode": "Split", "destination": "/data/artifacts"}},
        ["split-embedded-shares-volume"],
    ),
    "split-without-destination": (
        {"backendStore": DATABASE, "artifacts": {"mode": "Split"}},
        ["destination-required"],
    ),
    "artifacts-only-without-destination": ({"artifacts": {"mode": "ArtifactsOnly"}}, ["destination-required"]),
    "destination-no-bucket": ({"artifacts": {"destination": "s3:/bucket"}}, ["destination-format"]),
    "destination-ftp": ({"artifacts": {"destination": "ftp://host/dir"}}, ["destination-format"]),
    "destination-http": ({"artifacts": {"destination": "https://bucket.example.com/x"}}, ["destination-format"]),
    "destination-outside-volume": ({"artifacts": {"destination": "/tmp/artifacts"}}, ["destination-format"]),
    "destination-relative": ({"artifacts": {"destination": "./mlartifacts"}}, ["destination-format"]),
    "direct-without-root": ({"artifacts": {"mode": "Direct"}}, ["direct-needs-root"]),
    "direct-with-destination": (
        {"artifacts": {"mode": "Direct", "defaultArtifactRoot": S3, "destination": S3}},
        ["direct-no-destination"],
    ),
    "proxied-with-root": ({"artifacts": {"defaultArtifactRoot": S3}}, ["root-only-direct"]),
    "direct-root-local": (
        {"artifacts": {"mode": "Direct", "defaultArtifactRoot": "/data/artifacts"}},
        ["root-format"],
    ),
    "artifacts-replicas-outside-split": ({"artifacts": {"replicas": 2}}, ["split-only-settings"]),
    "s3-endpoint-without-scheme": (
        {"artifacts": {"s3": {"endpointUrl": "minio.storage.svc:9000"}}},
        ["s3-endpoint-format"],
    ),
    "gcs-endpoint-without-scheme": (
        {"artifacts": {"destination": "gs://bucket", "gcs": {"endpointUrl": "fake-gcs.storage.svc:4443"}}},
        ["gcs-endpoint-format"],
    ),
    "gcs-endpoint-with-key": (
        {"artifacts": {"destination": "gs://bucket", "gcs": {
            "endpointUrl": "http://fake-gcs.storage.svc:4443",
            "serviceAccountKey": {"secretKeyRef": {"name": "gcs", "key": "key.json"}}}}},
        ["gcs-endpoint-no-key"],
    ),
    "local-artifacts-many-pods": ({"backendStore": DATABASE, "replicas": 2}, ["shared-volume"]),
    "split-local-artifacts-many-pods": (
        {"backendStore": DATABASE, "artifacts": {"mode": "Split", "destination": "/data/artifacts", "replicas": 2}},
        ["shared-volume"],
    ),
    "basic-auth-sqlite-two-replicas": (
        {"backendStore": DATABASE, "replicas": 2, "artifacts": {"destination": S3}, "auth": {"type": "Basic"}},
        ["auth-shared-database"],
    ),
    "basic-auth-split": (
        {"backendStore": DATABASE, "artifacts": {"mode": "Split", "destination": S3},
         "auth": {"type": "Basic", "databaseUri": AUTH_DB}},
        ["auth-tracking-only"],
    ),
    "basic-auth-artifacts-only": (
        {"artifacts": {"mode": "ArtifactsOnly", "destination": S3}, "auth": {"type": "Basic"}},
        ["auth-tracking-only"],
    ),
    "kubernetes-auth-split": (
        {"backendStore": DATABASE, "artifacts": {"mode": "Split", "destination": S3}, "auth": {"type": "Kubernetes"}},
        ["kubernetes-auth-tracking-only"],
    ),
    "kubernetes-auth-artifacts-only": (
        {"artifacts": {"mode": "ArtifactsOnly", "destination": S3}, "auth": {"type": "Kubernetes"}},
        ["kubernetes-auth-tracking-only"],
    ),
    "oidc-without-settings": ({"auth": {"type": "OIDC"}}, ["oidc-needs-settings"]),
    "oidc-settings-without-oidc": ({"auth": {"type": "Kubernetes", "oidc": OIDC}}, ["oidc-settings-need-oidc"]),
    "oidc-scopes-without-openid": (
        {"auth": {"type": "OIDC", "oidc": {**OIDC, "scopes": ["email"]}}}, ["oidc-scopes-openid"],
    ),
    "kubernetes-settings-without-kubernetes": (
        {"auth": {"type": "Basic", "kubernetes": {"audience": "x"}}}, ["kubernetes-settings-need-kubernetes"],
    ),
    "auth-settings-without-basic": ({"auth": {"adminSecretRef": {"name": "admin"}}}, ["auth-settings-need-basic"]),
    "ingress-and-gateway": ({"ingress": INGRESS, "gateway": GATEWAY}, ["one-exposure"]),
    "autoscaling-inverted": (
        {"backendStore": DATABASE, "artifacts": {"destination": S3}, "autoscaling": {"minReplicas": 4, "maxReplicas": 3}},
        ["autoscaling-range"],
    ),
    "pdb-both-bounds": ({"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}, ["pdb-one-bound"]),
    "service-monitor-without-metrics": ({"metrics": {"serviceMonitor": {"enabled": True}}}, ["service-monitor-needs-metrics"]),
    "autoscaling-without-cpu-request": (
        {"backendStore": DATABASE, "artifacts": {"destination": S3}, "autoscaling": {"maxReplicas": 3},
         "resources": {"limits": {"memory": "1Gi"}}},
        ["autoscaling-needs-cpu-request"],
    ),
    "reserved-labels": ({"podTemplate": {"labels": {"app.kubernetes.io/name": "x"}}}, ["reserved-labels"]),
    "localhost-seccomp-without-profile": (
        {"podTemplate": {"securityContext": {"seccompProfile": {"type": "Localhost"}}}},
        ["localhost-seccomp-profile"],
    ),
    "runtime-default-with-profile": (
        {"podTemplate": {"securityContext": {"seccompProfile": {"type": "RuntimeDefault", "localhostProfile": "x"}}}},
        ["localhost-seccomp-profile"],
    ),
    "two-mistakes": (
        {"replicas": 2, "ingress": INGRESS, "gateway": GATEWAY},
        ["embedded-single-replica", "one-exposure"],
    ),
}

# name -> metadata.name breaking the name rule
BAD_NAMES = {
    "uppercase": "Team-A",
    "leading-digit": "1team",
    "dots": "team.a",
    "too-long": "a" * 41,
}

# name -> (whole object, error path, fragment of the message): refused by the schema itself.
SCHEMA_CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "secret-ref-without-key": (
        make({"backendStore": {"type": "Database", "uri": {"secretKeyRef": {"name": "db"}}}}),
        "spec.backendStore.uri.secretKeyRef.key",
        "Required value",
    ),
    "unknown-field": (make({"replica": 2}), "spec.replica", "unknown field"),
    "replicas-as-string": (make({"replicas": "2"}), "spec.replicas", "must be of type integer"),
    "negative-replicas": (make({"replicas": -1}), "spec.replicas", "greater than or equal to 0"),
    "mode-wrong-case": (make({"artifacts": {"mode": "proxied"}}), "spec.artifacts.mode", 'supported values: "Proxied"'),
    "root-user": (
        make({"podTemplate": {"securityContext": {"runAsUser": 0}}}),
        "spec.podTemplate.securityContext.runAsUser",
        "greater than or equal to 1",
    ),
    "privileged-is-no-field": (
        make({"podTemplate": {"securityContext": {"privileged": True}}}),
        "spec.podTemplate.securityContext.privileged",
        "unknown field",
    ),
    "ingress-without-hosts": (make({"ingress": {"className": "nginx"}}), "spec.ingress.hosts", "Required value"),
    "seccomp-unconfined": (
        make({"podTemplate": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}}),
        "spec.podTemplate.securityContext.seccompProfile.type",
        'Unsupported value: "Unconfined"',
    ),
}
