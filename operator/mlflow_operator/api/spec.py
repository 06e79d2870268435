"""The TrackingServer spec: what a team asks for.

One source of truth: the operator validates with these models, the CRD schema is generated from
them (`mlflow_operator.crd`), and cross-field rules live in `rules.py` as CEL (enforced by the API
server) with the same check in Python (enforced by `render` without a cluster).
"""
from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import Field

from ..constants import DEFAULT_IMAGE
from .base import DNS_SUBDOMAIN, ApiModel, LocalObjectReference, SecretValue, section

# Object store URIs MLflow reads and writes artifacts with: bucket or container is required.
OBJECT_STORE_URI = r"^(s3|gs|wasbs|abfss)://[^/?#\s]+(/[^\s]*)?$"
# A path on the TrackingServer's own volume.
VOLUME_PATH = r"^/data(/[-._a-zA-Z0-9]+)+/?$"
HTTP_URL = r"^https?://[^/?#\s]+(/[^\s]*)?$"
# A Kubernetes quantity in bytes, binary suffixes only (they map onto NGINX's k/m/g exactly).
BYTE_QUANTITY = r"^(0|[1-9][0-9]*(Ki|Mi|Gi|Ti)?)$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
LABEL_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

Quantity = Union[int, str]  # becomes x-kubernetes-int-or-string in the CRD
StringMap = dict[str, str]
# Kubernetes objects we pass through to the pod spec unchanged (validated by the API server when
# the Deployment is created): they are stored as-is, the CRD does not repeat their schema.
Passthrough = dict[str, Any]


def passthrough(description: str) -> Any:
    return Field(
        default=None,
        description=description,
        json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    )


# --------------------------------------------------------------------------------------------
# Backend store
# --------------------------------------------------------------------------------------------


class BackendStore(ApiModel):
    """Where MLflow keeps experiment, run and model-registry metadata (`--backend-store-uri`).

    Leave `backendStore` out for the embedded default: SQLite on the TrackingServer's volume.
    """

    type: Literal["SQLite", "FileStore", "Database"] = Field(
        default="SQLite",
        description="SQLite: a database file on the volume (sqlite:////data/mlflow.db), one "
        "replica, Recreate strategy. FileStore: MLflow's legacy ./mlruns-style directory on the "
        "volume (file:///data/mlruns); MLflow has deprecated it and only runs it with "
        "MLFLOW_ALLOW_FILE_STORE=true, which the operator sets: use it to serve existing mlruns "
        "data, prefer SQLite for new servers. Database: an external PostgreSQL or MySQL (or MariaDB) "
        "database whose SQLAlchemy URI is read from a Secret (`uri`); allows several replicas.",
    )
    uri: SecretValue | None = Field(
        default=None,
        description="Database only: the SQLAlchemy URI (postgresql://user:password@host:5432/db, "
        "mysql://user:password@host:3306/db; the image's drivers are psycopg2 and PyMySQL), read "
        "from a Secret key so the password never appears in the TrackingServer.",
    )
    registry_store_uri: SecretValue | None = Field(
        default=None,
        description="Database only, optional: a separate database for the model registry "
        "(`--registry-store-uri`). Defaults to the backend store.",
    )
    wait_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description="Database only: the pods' `wait-for-backend` init container waits up to this "
        "many seconds for the database to accept connections before the server starts (0 skips "
        "the wait).",
    )


# --------------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------------


class S3Settings(ApiModel):
    """Amazon S3 or an S3-compatible server (MinIO, Ceph RGW, ...)."""

    endpoint_url: str | None = Field(
        default=None,
        max_length=2048,
        description="Endpoint of an S3-compatible server, e.g. http://minio.storage.svc:9000 "
        "(MLFLOW_S3_ENDPOINT_URL). Leave out for AWS S3.",
    )
    region: str | None = Field(
        default=None, max_length=64, description="Region (AWS_DEFAULT_REGION), e.g. eu-west-1."
    )
    ignore_tls: bool = Field(
        default=False,
        description="Skip TLS certificate verification of the endpoint (MLFLOW_S3_IGNORE_TLS). "
        "Only for test servers with self-signed certificates.",
    )
    access_key_id: SecretValue | None = Field(
        default=None,
        description="Access key id (AWS_ACCESS_KEY_ID). Leave out to use the pod's identity "
        "(e.g. IRSA through serviceAccount.annotations).",
    )
    secret_access_key: SecretValue | None = Field(
        default=None, description="Secret access key (AWS_SECRET_ACCESS_KEY)."
    )


class GCSSettings(ApiModel):
    """Google Cloud Storage."""

    service_account_key: SecretValue | None = Field(
        default=None,
        description="A service account JSON key. It is mounted as a file and named by "
        "GOOGLE_APPLICATION_CREDENTIALS. Leave out to use Workload Identity.",
    )


class AzureSettings(ApiModel):
    """Azure Blob Storage / Data Lake Gen2."""

    connection_string: SecretValue | None = Field(
        default=None, description="Storage connection string (AZURE_STORAGE_CONNECTION_STRING)."
    )
    access_key: SecretValue | None = Field(
        default=None, description="Storage account access key (AZURE_STORAGE_ACCESS_KEY)."
    )


class Resources(ApiModel):
    """Compute resources of a container (as in a Pod spec)."""

    requests: dict[str, Quantity] | None = Field(
        default=None, max_length=16, description="Minimum resources, e.g. {cpu: 100m, memory: 512Mi}."
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, max_length=16, description="Maximum resources, e.g. {memory: 2Gi}."
    )


DEFAULT_RESOURCES = {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


def resources_field(description: str, default: bool) -> Any:
    if not default:
        return Field(default=None, description=description)
    return Field(
        default_factory=lambda: Resources.model_validate(DEFAULT_RESOURCES),
        description=description,
        json_schema_extra={"default": DEFAULT_RESOURCES},
    )


class Artifacts(ApiModel):
    """Where artifacts (models, plots, files) are stored and who talks to the store."""

    mode: Literal["Proxied", "Direct", "Split", "ArtifactsOnly"] = Field(
        default="Proxied",
        description="Proxied (default): the server stores artifacts for the clients "
        "(`--serve-artifacts --artifacts-destination`), clients need no storage credentials; "
        "without a destination they go to /data/artifacts on the volume. Direct: clients read "
        "and write `defaultArtifactRoot` themselves (`--no-serve-artifacts`) and need their own "
        "credentials. Split: metadata pods plus separate artifacts-only pods behind one "
        "endpoint; only the artifacts pods hold storage credentials. ArtifactsOnly: this "
        "server only proxies artifacts (`--artifacts-only`), it has no backend store.",
    )
    destination: str | None = Field(
        default=None,
        max_length=2048,
        description="Proxied, Split and ArtifactsOnly: where the server stores artifacts "
        "(`--artifacts-destination`): s3://bucket/path, gs://bucket/path, "
        "wasbs://container@account.blob.core.windows.net/path, abfss://container@account.dfs."
        "core.windows.net/path, or a path under /data (the TrackingServer's volume). Required "
        "in Split and ArtifactsOnly modes; defaults to /data/artifacts in Proxied mode.",
    )
    default_artifact_root: str | None = Field(
        default=None,
        max_length=2048,
        description="Direct mode only, required there: the object store URI clients write to "
        "(`--default-artifact-root`), e.g. s3://bucket/mlflow.",
    )
    s3: S3Settings | None = Field(default=None, description="S3 or S3-compatible settings.")
    gcs: GCSSettings | None = Field(default=None, description="Google Cloud Storage settings.")
    azure: AzureSettings | None = Field(default=None, description="Azure Blob Storage settings.")
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Split mode only: replicas of the artifacts-only Deployment (default 1).",
    )
    resources: Resources | None = resources_field(
        "Split mode only: resources of the artifacts-only pods (default: as spec.resources' "
        "default).",
        default=False,
    )


# --------------------------------------------------------------------------------------------
# Volume, auth, exposure
# --------------------------------------------------------------------------------------------


class Storage(ApiModel):
    """The TrackingServer's volume, mounted at /data, created only when something lives on it:
    an embedded backend store (SQLite, FileStore), local artifacts, or the SQLite auth database."""

    size: str = Field(
        default="10Gi",
        max_length=32,
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$",
        description="Requested size of the PersistentVolumeClaim. It can grow later if the "
        "storage class allows expansion, never shrink.",
    )
    storage_class_name: str | None = Field(
        default=None,
        max_length=253,
        description="StorageClass of the claim; the cluster's default class when left out.",
    )
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]] = Field(
        default_factory=lambda: ["ReadWriteOnce"],
        min_length=1,
        max_length=3,
        description="Access modes of the claim. Several replicas sharing local artifacts need "
        "ReadWriteMany; an embedded database always runs one replica.",
        json_schema_extra={"default": ["ReadWriteOnce"]},
    )


class AdminSecretRef(ApiModel):
    """A Secret holding the basic-auth admin's user name and password."""

    name: str = Field(
        description="Name of the Secret.", min_length=1, max_length=253, pattern=DNS_SUBDOMAIN
    )
    username_key: str = Field(
        default="username", max_length=253, description="Key of the user name."
    )
    password_key: str = Field(default="password", max_length=253, description="Key of the password.")


class Auth(ApiModel):
    """Who may use the server."""

    type: Literal["None", "Basic"] = Field(
        default="None",
        description="None: no authentication (put the server behind your own proxy or VPN). "
        "Basic: MLflow's basic-auth app (`--app-name basic-auth`) with an admin user.",
    )
    admin_secret_ref: AdminSecretRef | None = Field(
        default=None,
        description="Basic only: the admin's credentials. When left out, the operator creates "
        "the Secret <name>-admin once (user admin, a random 24+ character password) and never "
        "changes it. MLflow reads them when it creates the auth database; change the password "
        "later through MLflow itself.",
    )
    database_uri: SecretValue | None = Field(
        default=None,
        description="Basic only: SQLAlchemy URI of the auth database, from a Secret. Defaults to "
        "sqlite:////data/auth.db on the volume, which serves one pod only: required with more "
        "than one replica, autoscaling or Split mode.",
    )


class Http(ApiModel):
    """How clients reach the server over HTTP."""

    max_upload_size: str = Field(
        default="5Gi",
        max_length=16,
        pattern=BYTE_QUANTITY,
        description="Largest request body a client may send (model uploads), as a byte quantity "
        "(Ki, Mi, Gi, Ti; 0 = unlimited). The server refuses a larger body with 413 whatever the "
        "path (Ingress, HTTPRoute, LoadBalancer, in-cluster clients); it is also the NGINX "
        "Ingress proxy-body-size.",
    )
    timeout_seconds: int = Field(
        default=600,
        ge=1,
        le=86400,
        description="How long a proxy waits for a slow upload or download: NGINX "
        "proxy-read/send-timeout, the HTTPRoute request timeout.",
    )
    keep_alive_timeout_seconds: int = Field(
        default=75,
        ge=1,
        le=3600,
        description="The server's HTTP keep-alive timeout. Keep it above the proxy's upstream "
        "keep-alive (NGINX: 60s) so the proxy never reuses a connection the server just closed.",
    )
    api_shortcut: bool = Field(
        default=True,
        description="Send tracking API requests past three MLflow middleware layers that do nothing "
        "for them (a third less CPU per request, answers unchanged). It steps aside by itself for "
        "any MLflow code it was not reviewed against; false turns it off.",
    )
    allowed_hosts: list[str] | None = Field(
        default=None,
        max_length=64,
        description="Host headers the server accepts (`--allowed-hosts`, DNS-rebinding "
        "protection; fnmatch patterns such as *.example.com). Default: the Ingress/HTTPRoute "
        "hosts, the Service's DNS names with and without :5000, the pod's IP, and localhost. "
        "Setting it replaces that list.",
        json_schema_extra={"items": {"type": "string", "maxLength": 253}},
    )
    cors_allowed_origins: list[str] | None = Field(
        default=None,
        max_length=64,
        description="Origins allowed to make cross-origin requests (`--cors-allowed-origins`). "
        "Default: https:// (and, without TLS, http://) of each Ingress/HTTPRoute host, so the "
        "web UI works. Setting it replaces that list.",
        json_schema_extra={"items": {"type": "string", "maxLength": 2048}},
    )


class IngressSpec(ApiModel):
    """A Kubernetes Ingress in front of the server."""

    class_name: str | None = Field(
        default=None,
        max_length=253,
        description="IngressClass name, e.g. nginx. The cluster's default class when left out.",
    )
    hosts: list[str] = Field(
        min_length=1,
        max_length=16,
        description="Host names the Ingress answers for, e.g. [mlflow.team-a.example.com].",
        json_schema_extra={"items": {"type": "string", "maxLength": 253, "pattern": HOSTNAME}},
    )
    tls_secret_name: str | None = Field(
        default=None,
        max_length=253,
        description="A kubernetes.io/tls Secret for the hosts. HTTPS is served when set.",
    )
    annotations: StringMap | None = Field(
        default=None,
        max_length=64,
        description="Extra Ingress annotations (e.g. cert-manager's). The NGINX body size and "
        "timeout annotations are derived from spec.http; set here they win.",
    )


class ParentReference(ApiModel):
    """A Gateway (or ListenerSet) the HTTPRoute attaches to."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Gateway.")
    namespace: str | None = Field(
        default=None, max_length=63, description="Namespace of the Gateway; the route's own when left out."
    )
    section_name: str | None = Field(
        default=None, max_length=253, description="A listener of the Gateway, by name."
    )
    group: str | None = Field(
        default=None, max_length=253, description="API group of the parent (gateway.networking.k8s.io)."
    )
    kind: str | None = Field(default=None, max_length=63, description="Kind of the parent (Gateway).")
    port: int | None = Field(default=None, ge=1, le=65535, description="A listener port of the Gateway.")


class GatewaySpec(ApiModel):
    """A Gateway API HTTPRoute in front of the server."""

    parent_refs: list[ParentReference] = Field(
        min_length=1, max_length=32, description="Gateways the route attaches to."
    )
    hostnames: list[str] | None = Field(
        default=None,
        max_length=16,
        description="Host names the route matches. All the Gateway's host names when left out.",
        json_schema_extra={"items": {"type": "string", "maxLength": 253, "pattern": HOSTNAME}},
    )
    tls: bool = Field(
        default=True,
        description="Whether the Gateway listener terminates TLS for these hosts: decides the "
        "derived CORS origins (https:// or http://).",
    )


class ServiceSpec(ApiModel):
    """The client-facing Service (named after the TrackingServer, port 5000 `http`)."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type."
    )
    annotations: StringMap | None = Field(
        default=None, max_length=64, description="Extra annotations of the Service(s)."
    )


class ServiceAccountSpec(ApiModel):
    """The pods' ServiceAccount (<name>), created by the operator. Its API token is never
    mounted: the server does not talk to Kubernetes."""

    annotations: StringMap | None = Field(
        default=None,
        max_length=64,
        description="Annotations, e.g. eks.amazonaws.com/role-arn or "
        "iam.gke.io/gcp-service-account for cloud storage access without keys.",
    )


# --------------------------------------------------------------------------------------------
# Operations: metrics, disruption, autoscaling, network policy, pod overrides
# --------------------------------------------------------------------------------------------


class ServiceMonitorSpec(ApiModel):
    """A prometheus-operator ServiceMonitor scraping the Services' metrics port."""

    enabled: bool = Field(default=False, description="Create the ServiceMonitor (needs its CRD).")
    interval: str = Field(
        default="30s", pattern=r"^[0-9]+(ms|s|m|h)$", max_length=16, description="Scrape interval."
    )
    labels: StringMap | None = Field(
        default=None,
        max_length=32,
        description="Extra labels, e.g. the release label your Prometheus selects.",
    )


class Metrics(ApiModel):
    """Prometheus metrics."""

    enabled: bool = Field(
        default=False,
        description="Serve Prometheus metrics (`--expose-prometheus`) on port 9090 (named metrics), "
        "apart from the API: no basic-auth there, and the Ingress and HTTPRoute do not route it. "
        "The API port answers 404 for /metrics.",
    )
    service_monitor: ServiceMonitorSpec = section(
        ServiceMonitorSpec, "A ServiceMonitor for prometheus-operator (needs metrics.enabled)."
    )


class PodDisruptionBudgetSpec(ApiModel):
    """A PodDisruptionBudget, created when more than one replica runs."""

    enabled: bool = Field(
        default=True, description="Create it whenever replicas > 1 or autoscaling is on."
    )
    min_available: Quantity | None = Field(
        default=None, description="Pods that must stay available (number or percentage)."
    )
    max_unavailable: Quantity | None = Field(
        default=None,
        description="Pods that may be unavailable (number or percentage). Default 1 when "
        "neither this nor minAvailable is set.",
    )


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler for the tracking pods; needs backendStore.type Database.
    While it is set, it owns the replica count and spec.replicas is not applied."""

    min_replicas: int = Field(default=2, ge=1, le=100, description="Fewest replicas.")
    max_replicas: int = Field(ge=1, le=100, description="Most replicas.")
    target_cpu_utilization_percentage: int = Field(
        default=80,
        alias="targetCPUUtilizationPercentage",  # spelled as in autoscaling/v1
        ge=1,
        le=100,
        description="Average CPU utilization (of requests) to keep.",
    )


class NetworkPolicySpec(ApiModel):
    """A NetworkPolicy limiting who may connect to the pods' ports (5000, and 9090 with metrics)."""

    enabled: bool = Field(default=False, description="Create the NetworkPolicy.")
    ingress_from: list[Passthrough] | None = Field(
        default=None,
        max_length=32,
        description="NetworkPolicyPeers allowed to connect (podSelector, namespaceSelector, "
        "ipBlock), e.g. your ingress controller's and Prometheus' namespaces. Pods of this "
        "namespace are always allowed. Kubelet probes are not affected.",
        json_schema_extra={"items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    )


class SeccompProfile(ApiModel):
    """Seccomp profile; only the kinds the `restricted` Pod Security Standard allows."""

    type: Literal["RuntimeDefault", "Localhost"] = Field(
        default="RuntimeDefault", description="RuntimeDefault or Localhost."
    )
    localhost_profile: str | None = Field(
        default=None, max_length=253, description="Localhost only: the profile's path on the node."
    )


class PodSecurityOverrides(ApiModel):
    """The pod security settings that may change without leaving the `restricted` Pod Security
    Standard. The rest (non-root, read-only root filesystem, no privilege escalation, all
    capabilities dropped) is fixed and has no field."""

    run_as_user: int | None = Field(
        default=None, ge=1, le=2147483647, description="UID of the server (default 10001; never 0)."
    )
    run_as_group: int | None = Field(
        default=None, ge=1, le=2147483647, description="GID of the server (default 10001; never 0)."
    )
    fs_group: int | None = Field(
        default=None, ge=1, le=2147483647, description="Group owning the volume (default 10001)."
    )
    supplemental_groups: list[int] | None = Field(
        default=None,
        max_length=16,
        description="Extra groups of the server process.",
        json_schema_extra={"items": {"type": "integer", "minimum": 1}},
    )
    seccomp_profile: SeccompProfile | None = Field(
        default=None, description="Seccomp profile (default RuntimeDefault)."
    )


class EnvVar(ApiModel):
    """An extra environment variable (as in a Pod spec)."""

    name: str = Field(min_length=1, max_length=253, pattern=ENV_NAME, description="Variable name.")
    value: str | None = Field(default=None, max_length=32768, description="Literal value.")
    value_from: Passthrough | None = passthrough(
        "A source for the value (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef)."
    )


class PodTemplate(ApiModel):
    """Changes to the server pods; everything here applies to all the operator's pods."""

    annotations: StringMap | None = Field(default=None, max_length=64, description="Extra pod annotations.")
    labels: StringMap | None = Field(
        default=None,
        max_length=64,
        description="Extra pod labels; app.kubernetes.io/* labels belong to the operator.",
    )
    node_selector: StringMap | None = Field(
        default=None, max_length=32, description="Node labels the pods must run on."
    )
    tolerations: list[Passthrough] | None = Field(
        default=None,
        max_length=32,
        description="Tolerations (as in a Pod spec).",
        json_schema_extra={"items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    )
    affinity: Passthrough | None = passthrough("Affinity (as in a Pod spec).")
    topology_spread_constraints: list[Passthrough] | None = Field(
        default=None,
        max_length=16,
        description="Topology spread constraints (as in a Pod spec).",
        json_schema_extra={"items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    )
    priority_class_name: str | None = Field(default=None, max_length=253, description="PriorityClass.")
    extra_env: list[EnvVar] | None = Field(
        default=None,
        max_length=64,
        description="Extra environment variables of the server container, e.g. "
        "MLFLOW_S3_UPLOAD_EXTRA_ARGS. MLFLOW_OPERATOR_* variables come from the spec.",
    )
    security_context: PodSecurityOverrides | None = Field(
        default=None, description="Pod security overrides within the `restricted` standard."
    )


# --------------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------------


class TrackingServerSpec(ApiModel):
    """The desired MLflow tracking server. An empty spec runs the quickstart: one replica with
    SQLite and artifacts on a 10Gi volume, no authentication, a ClusterIP Service on port 5000."""

    image: str | None = Field(
        default=None,
        max_length=512,
        description=f"Server image. Default: {DEFAULT_IMAGE} (the MLflow version this operator "
        "release pins; left out, it follows operator upgrades). The image must provide the "
        "`mlflow-entrypoint` command.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Image pull policy."
    )
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=16, description="Secrets for pulling the image."
    )
    replicas: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Tracking server pods. More than one needs backendStore.type Database. "
        "`kubectl scale` changes it. Ignored while autoscaling is set.",
    )
    workers: int = Field(
        default=2, ge=1, le=64, description="Server worker processes per pod (`--workers`)."
    )
    backend_store: BackendStore | None = Field(
        default=None,
        description="Metadata store. Left out: SQLite on the volume (none in ArtifactsOnly mode).",
    )
    artifacts: Artifacts = section(Artifacts, "Artifact storage and the artifact serving mode.")
    storage: Storage = section(Storage, "The volume at /data, when one is needed.")
    auth: Auth = section(Auth, "Authentication.")
    http: Http = section(Http, "HTTP settings: upload size, timeouts, allowed hosts and origins.")
    ingress: IngressSpec | None = Field(
        default=None, description="Expose the server with an Ingress (exclusive with gateway)."
    )
    gateway: GatewaySpec | None = Field(
        default=None, description="Expose the server with a Gateway API HTTPRoute (exclusive with ingress)."
    )
    service: ServiceSpec = section(ServiceSpec, "The client-facing Service.")
    service_account: ServiceAccountSpec = section(ServiceAccountSpec, "The pods' ServiceAccount.")
    resources: Resources = resources_field("Resources of the server container.", default=True)
    pod_template: PodTemplate = section(PodTemplate, "Scheduling and other pod overrides.")
    metrics: Metrics = section(Metrics, "Prometheus metrics.")
    pod_disruption_budget: PodDisruptionBudgetSpec = section(
        PodDisruptionBudgetSpec, "PodDisruptionBudget for more than one replica."
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="HorizontalPodAutoscaler for the tracking pods."
    )
    network_policy: NetworkPolicySpec = section(NetworkPolicySpec, "NetworkPolicy for the pods.")
    retention_policy: Literal["Retain", "Delete"] = Field(
        default="Retain",
        description="What happens to the volume and the generated Secrets (admin password, "
        "Flask secret key) when the TrackingServer is deleted. Retain (default): they stay and "
        "are reused if a TrackingServer of the same name comes back; delete them by hand. "
        "Delete: they are owned by the TrackingServer and garbage-collected with it, data "
        "included. Databases and object stores outside the cluster are never touched.",
    )

