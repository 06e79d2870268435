"""Cross-field validation rules: each one written once, enforced twice.

The CEL expression goes into the CRD (`x-kubernetes-validations` on `spec`, or on the root for
metadata), so the API server refuses a bad TrackingServer before the operator sees it. The Python
predicate enforces the same rule in the models, so `mlflow-operator render` fails the same way
without a cluster. Both report the same message for the same field; tests/unit/test_cel_rules.py
evaluates the CEL with a CEL interpreter and checks that it agrees with the Python side.

CEL notes: the API server applies schema defaults before validation, so fields with a default
(replicas, artifacts.mode, auth.type, storage.accessModes, ...) are always present; optional fields
are tested with has(). Lists and maps carry maxItems/maxProperties so the rules' cost is bounded.
"""
from __future__ import annotations

import re

from . import derived as d
from .cel import REQUIRED, Rule
from .cel import cel_str as _cel_str
from .spec import HTTP_URL, OBJECT_STORE_URI, VOLUME_PATH, TrackingServerSpec


# Reusable CEL fragments (parenthesized so they compose).
EMBEDDED = (
    "(self.artifacts.mode != 'ArtifactsOnly' && "
    "(!has(self.backendStore) || self.backendStore.type != 'Database'))"
)
MANY_TRACKING_PODS = "(self.replicas > 1 || has(self.autoscaling))"
LOCAL_ARTIFACTS = (
    "(self.artifacts.mode != 'Direct' && "
    "(!has(self.artifacts.destination) || self.artifacts.destination.startsWith('/')))"
)




def _endpoint_url_rule(store: str, example: str) -> Rule:
    """artifacts.<store>.endpointUrl, when set, is an http(s) URL with a host."""
    field = f"artifacts.{store}.endpointUrl"

    def endpoint_url(spec: TrackingServerSpec) -> str | None:
        settings = getattr(spec.artifacts, store)
        return None if settings is None else settings.endpoint_url

    return Rule(
        f"{store}-endpoint-format",
        f"!has(self.artifacts.{store}) || !has(self.{field}) || self.{field}.matches({_cel_str(HTTP_URL)})",
        f"{field} must be an http:// or https:// URL with a host, e.g. {example}",
        field,
        lambda s: (url := endpoint_url(s)) is None or bool(d.HTTP_URL_RE.match(url)),
    )


SPEC_RULES: tuple[Rule, ...] = (
    Rule(
        "embedded-single-replica",
        f"!({EMBEDDED} && self.replicas > 1)",
        "replicas must be at most 1 with an embedded backend store (SQLite or FileStore on the "
        "volume): set backendStore.type to Database to run more replicas",
        "replicas",
        lambda s: not (d.embedded_backend(s) and s.replicas > 1),
    ),
    Rule(
        "embedded-no-autoscaling",
        f"!({EMBEDDED} && has(self.autoscaling))",
        "autoscaling needs backendStore.type Database: an embedded backend store (SQLite or "
        "FileStore) serves a single replica",
        "autoscaling",
        lambda s: not (d.embedded_backend(s) and s.autoscaling is not None),
    ),
    Rule(
        "database-needs-uri",
        "!has(self.backendStore) || self.backendStore.type != 'Database' || has(self.backendStore.uri)",
        "backendStore.uri is required when backendStore.type is Database: a secretKeyRef to the "
        "database URI (postgresql:// or mysql://)",
        "backendStore.uri",
        lambda s: s.backend_store is None or s.backend_store.type != "Database" or s.backend_store.uri is not None,
    ),
    Rule(
        "embedded-no-uri",
        "!has(self.backendStore) || self.backendStore.type == 'Database' || "
        "(!has(self.backendStore.uri) && !has(self.backendStore.registryStoreUri))",
        "backendStore.uri and backendStore.registryStoreUri are only used with backendStore.type "
        "Database: SQLite and FileStore live on the volume",
        "backendStore.uri",
        lambda s: s.backend_store is None
        or s.backend_store.type == "Database"
        or (s.backend_store.uri is None and s.backend_store.registry_store_uri is None),
    ),
    Rule(
        "artifacts-only-no-backend",
        "self.artifacts.mode != 'ArtifactsOnly' || !has(self.backendStore)",
        "backendStore must be left out in ArtifactsOnly mode: an artifacts-only server has no "
        "backend store (MLflow refuses --backend-store-uri with --artifacts-only)",
        "backendStore",
        lambda s: s.artifacts.mode != "ArtifactsOnly" or s.backend_store is None,
    ),
    Rule(
        "split-embedded-shares-volume",
        f"self.artifacts.mode != 'Split' || !{EMBEDDED} || !{LOCAL_ARTIFACTS} || "
        "'ReadWriteMany' in self.storage.accessModes",
        "in Split mode with an embedded backend store (SQLite or FileStore) the metadata pod and "
        "the artifacts pods share the /data volume: set storage.accessModes to [ReadWriteMany], "
        "store artifacts in an object store (artifacts.destination: s3://...), or use "
        "backendStore.type Database",
        "artifacts.destination",
        lambda s: s.artifacts.mode != "Split" or not d.embedded_backend(s) or not d.local_artifacts(s)
        or "ReadWriteMany" in s.storage.access_modes,
    ),
    Rule(
        "destination-required",
        "!(self.artifacts.mode in ['Split', 'ArtifactsOnly']) || has(self.artifacts.destination)",
        "artifacts.destination is required in Split and ArtifactsOnly modes: an object store URI "
        "(s3://, gs://, wasbs://) or a path under /data on the volume",
        "artifacts.destination",
        lambda s: s.artifacts.mode not in ("Split", "ArtifactsOnly") or s.artifacts.destination is not None,
    ),
    Rule(
        "destination-format",
        "!has(self.artifacts.destination) || "
        f"self.artifacts.destination.matches({_cel_str(OBJECT_STORE_URI)}) || "
        f"self.artifacts.destination.matches({_cel_str(VOLUME_PATH)})",
        "artifacts.destination must be s3://bucket[/path], gs://bucket[/path], "
        "wasbs://container@account.blob.core.windows.net[/path] or a path under /data",
        "artifacts.destination",
        lambda s: s.artifacts.destination is None
        or bool(d.OBJECT_STORE_URI_RE.match(s.artifacts.destination))
        or bool(d.VOLUME_PATH_RE.match(s.artifacts.destination)),
    ),
    Rule(
        "direct-needs-root",
        "self.artifacts.mode != 'Direct' || has(self.artifacts.defaultArtifactRoot)",
        "artifacts.defaultArtifactRoot is required in Direct mode: the object store URI that "
        "clients write to",
        "artifacts.defaultArtifactRoot",
        lambda s: s.artifacts.mode != "Direct" or s.artifacts.default_artifact_root is not None,
    ),
    Rule(
        "direct-no-destination",
        "self.artifacts.mode != 'Direct' || !has(self.artifacts.destination)",
        "artifacts.destination is not used in Direct mode, where clients write to "
        "artifacts.defaultArtifactRoot themselves: remove it, or use mode Proxied",
        "artifacts.destination",
        lambda s: s.artifacts.mode != "Direct" or s.artifacts.destination is None,
    ),
    Rule(
        "root-only-direct",
        "self.artifacts.mode == 'Direct' || !has(self.artifacts.defaultArtifactRoot)",
        "artifacts.defaultArtifactRoot is only used in Direct mode; in Proxied, Split and "
        "ArtifactsOnly modes set artifacts.destination",
        "artifacts.defaultArtifactRoot",
        lambda s: s.artifacts.mode == "Direct" or s.artifacts.default_artifact_root is None,
    ),
    Rule(
        "root-format",
        "!has(self.artifacts.defaultArtifactRoot) || "
        f"self.artifacts.defaultArtifactRoot.matches({_cel_str(OBJECT_STORE_URI)})",
        "artifacts.defaultArtifactRoot must be an object store URI that clients can reach: "
        "s3://bucket[/path], gs://bucket[/path] or wasbs://container@account.blob.core.windows.net[/path]",
        "artifacts.defaultArtifactRoot",
        lambda s: s.artifacts.default_artifact_root is None
        or bool(d.OBJECT_STORE_URI_RE.match(s.artifacts.default_artifact_root)),
    ),
    Rule(
        "split-only-settings",
        "self.artifacts.mode == 'Split' || "
        "(!has(self.artifacts.replicas) && !has(self.artifacts.resources))",
        "artifacts.replicas and artifacts.resources configure the artifacts pods of Split mode "
        "only: use spec.replicas and spec.resources",
        "artifacts.replicas",
        lambda s: s.artifacts.mode == "Split"
        or (s.artifacts.replicas is None and s.artifacts.resources is None),
    ),
    _endpoint_url_rule("s3", "http://minio.storage.svc:9000"),
    _endpoint_url_rule("gcs", "http://fake-gcs.storage.svc:4443"),
    Rule(
        # google-cloud-storage's Client() takes anonymous credentials whenever STORAGE_EMULATOR_HOST
        # is set and none are passed (MLflow passes none): the key would be mounted and never sent.
        "gcs-endpoint-no-key",
        "!has(self.artifacts.gcs) || !has(self.artifacts.gcs.endpointUrl) || "
        "!has(self.artifacts.gcs.serviceAccountKey)",
        "artifacts.gcs.serviceAccountKey is not used with artifacts.gcs.endpointUrl: "
        "google-cloud-storage sends no credentials to a GCS-compatible endpoint (STORAGE_EMULATOR_HOST); "
        "remove one of them",
        "artifacts.gcs.serviceAccountKey",
        lambda s: s.artifacts.gcs is None
        or s.artifacts.gcs.endpoint_url is None
        or s.artifacts.gcs.service_account_key is None,
    ),
    Rule(
        "shared-volume",
        f"{EMBEDDED} || !{LOCAL_ARTIFACTS} || 'ReadWriteMany' in self.storage.accessModes || "
        "!(self.artifacts.mode == 'Split' ? "
        f"(has(self.artifacts.replicas) && self.artifacts.replicas > 1) : {MANY_TRACKING_PODS})",
        "artifacts on the /data volume are shared by more than one pod: set storage.accessModes "
        "to [ReadWriteMany], or store artifacts in an object store (artifacts.destination)",
        "storage.accessModes",
        lambda s: d.embedded_backend(s)
        or not d.local_artifacts_on_many_pods(s)
        or "ReadWriteMany" in s.storage.access_modes,
    ),
    Rule(
        "auth-shared-database",
        f"self.auth.type != 'Basic' || has(self.auth.databaseUri) || !{MANY_TRACKING_PODS}",
        "auth.databaseUri is required for basic auth with more than one replica or autoscaling: "
        "the default SQLite auth database on the volume serves one pod",
        "auth.databaseUri",
        lambda s: not d.basic_auth(s) or s.auth.database_uri is not None or not d.tracking_pods_may_be_many(s),
    ),
    Rule(
        "auth-tracking-only",
        "self.auth.type != 'Basic' || !(self.artifacts.mode in ['Split', 'ArtifactsOnly'])",
        "auth.type Basic needs artifacts.mode Proxied or Direct: MLflow's basic auth checks artifact "
        "requests against the tracking database, which artifacts-only pods do not have, so their "
        "routes would be left unprotected",
        "auth.type",
        lambda s: not d.basic_auth(s) or s.artifacts.mode not in ("Split", "ArtifactsOnly"),
    ),
    Rule(
        "auth-settings-need-basic",
        "self.auth.type == 'Basic' || (!has(self.auth.adminSecretRef) && !has(self.auth.databaseUri))",
        "auth.adminSecretRef and auth.databaseUri are only used with auth.type Basic",
        "auth.type",
        lambda s: d.basic_auth(s) or (s.auth.admin_secret_ref is None and s.auth.database_uri is None),
    ),
    Rule(
        "kubernetes-auth-tracking-only",
        "self.auth.type != 'Kubernetes' || !(self.artifacts.mode in ['Split', 'ArtifactsOnly'])",
        "auth.type Kubernetes needs artifacts.mode Proxied or Direct: the artifacts pods of Split and "
        "ArtifactsOnly mode do not check tokens yet, so their routes would be left unprotected",
        "auth.type",
        lambda s: not d.kubernetes_auth(s) or s.artifacts.mode not in ("Split", "ArtifactsOnly"),
    ),
    Rule(
        "kubernetes-settings-need-kubernetes",
        "self.auth.type == 'Kubernetes' || !has(self.auth.kubernetes)",
        "auth.kubernetes is only used with auth.type Kubernetes",
        "auth.kubernetes",
        lambda s: d.kubernetes_auth(s) or s.auth.kubernetes is None,
    ),
    Rule(
        "oidc-needs-settings",
        "self.auth.type != 'OIDC' || has(self.auth.oidc)",
        "auth.type OIDC needs auth.oidc: the provider's issuerUrl, the clientId and the clientSecret",
        "auth.oidc",
        lambda s: not d.oidc_auth(s) or s.auth.oidc is not None,
    ),
    Rule(
        "oidc-scopes-openid",
        "!has(self.auth.oidc) || 'openid' in self.auth.oidc.scopes",
        "auth.oidc.scopes must include openid: without it the provider issues no ID token",
        "auth.oidc.scopes",
        lambda s: s.auth.oidc is None or "openid" in s.auth.oidc.scopes,
    ),
    Rule(
        "oidc-settings-need-oidc",
        "self.auth.type == 'OIDC' || !has(self.auth.oidc)",
        "auth.oidc is only used with auth.type OIDC",
        "auth.oidc",
        lambda s: d.oidc_auth(s) or s.auth.oidc is None,
    ),
    Rule(
        "one-exposure",
        "!(has(self.ingress) && has(self.gateway))",
        "ingress and gateway are mutually exclusive: expose the server through one of them",
        "ingress",
        lambda s: not (s.ingress is not None and s.gateway is not None),
    ),
    Rule(
        "autoscaling-range",
        "!has(self.autoscaling) || self.autoscaling.maxReplicas >= self.autoscaling.minReplicas",
        "autoscaling.maxReplicas must be greater than or equal to autoscaling.minReplicas",
        "autoscaling.maxReplicas",
        lambda s: s.autoscaling is None or s.autoscaling.max_replicas >= s.autoscaling.min_replicas,
    ),
    Rule(
        "pdb-one-bound",
        "!(has(self.podDisruptionBudget.minAvailable) && has(self.podDisruptionBudget.maxUnavailable))",
        "podDisruptionBudget.minAvailable and podDisruptionBudget.maxUnavailable are mutually "
        "exclusive",
        "podDisruptionBudget",
        lambda s: not (
            s.pod_disruption_budget.min_available is not None
            and s.pod_disruption_budget.max_unavailable is not None
        ),
    ),
    Rule(
        "service-monitor-needs-metrics",
        "!self.metrics.serviceMonitor.enabled || self.metrics.enabled",
        "metrics.serviceMonitor.enabled needs metrics.enabled: true (it scrapes /metrics)",
        "metrics.serviceMonitor.enabled",
        lambda s: not s.metrics.service_monitor.enabled or s.metrics.enabled,
    ),
    Rule(
        "autoscaling-needs-cpu-request",
        "!has(self.autoscaling) || (has(self.resources.requests) && 'cpu' in self.resources.requests)",
        "autoscaling scales on CPU utilization, a percentage of the CPU request: set "
        "resources.requests.cpu (e.g. 500m)",
        "resources.requests",
        lambda s: s.autoscaling is None or "cpu" in (s.resources.requests or {}),
        reason=REQUIRED,
    ),
    Rule(
        "reserved-labels",
        "!has(self.podTemplate.labels) || "
        "self.podTemplate.labels.all(k, !k.startsWith('app.kubernetes.io/'))",
        "podTemplate.labels must not set app.kubernetes.io/* labels: the operator selects its "
        "pods with them",
        "podTemplate.labels",
        lambda s: not any(k.startswith("app.kubernetes.io/") for k in s.pod_template.labels or {}),
    ),
    Rule(
        "localhost-seccomp-profile",
        "!has(self.podTemplate.securityContext) || !has(self.podTemplate.securityContext.seccompProfile) || "
        "(self.podTemplate.securityContext.seccompProfile.type == 'Localhost') == "
        "has(self.podTemplate.securityContext.seccompProfile.localhostProfile)",
        "podTemplate.securityContext.seccompProfile.localhostProfile is required with type "
        "Localhost and only allowed with it",
        "podTemplate.securityContext.seccompProfile",
        lambda s: s.pod_template.security_context is None
        or s.pod_template.security_context.seccomp_profile is None
        or (s.pod_template.security_context.seccomp_profile.type == "Localhost")
        == (s.pod_template.security_context.seccomp_profile.localhost_profile is not None),
    ),
)

# Child names add suffixes (<name>-artifacts, <name>-migrate-<8 hex>) and Services need DNS-1035
# labels, so the TrackingServer's name is stricter than a generic object name.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME_LENGTH = 40
NAME_RULE = Rule(
    "name-format",
    f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && self.metadata.name.matches({_cel_str(NAME_PATTERN)})",
    f"metadata.name must be at most {MAX_NAME_LENGTH} characters of lowercase letters, digits and "
    "'-', starting with a letter: the Services and Jobs named after it must be valid DNS labels",
    "metadata.name",
    lambda name: len(name) <= MAX_NAME_LENGTH and bool(re.match(NAME_PATTERN, name)),
)

RULES_BY_NAME = {rule.name: rule for rule in (*SPEC_RULES, NAME_RULE)}


def spec_violations(spec: TrackingServerSpec) -> list[Rule]:
    """The spec rules this spec breaks, in rule order."""
    return [rule for rule in SPEC_RULES if not rule.check(spec)]
