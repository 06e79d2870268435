"""The TrackingServer spec: what a team asks for.

One source of truth: the operator validates with these models, the CRD schema is generated from
them (`mlflow_operator.crd`), and cross-field rules live in `rules.py` as CEL (enforced by the API
server) with the same check in Python (enforced by `render` without a cluster).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import Field

from ..constants import DEFAULT_IMAGE
from .base import ApiModel, LocalObjectReference, ObjectName, SecretKey, SecretValue, section
from .cel import (
    FORBIDDEN,
    Rule,
    cel_dns_subdomain,
    cel_list,
    cel_str,
    checked,
    dns_subdomain_rule,
    pattern_rule,
    is_dns_subdomain,
    matches,
    string_rule,
)
from .kubetypes import (
    Affinity,
    Annotations,
    EnvVarSource,
    Labels,
    NamespaceName,
    NetworkPolicyPeer,
    NodeSelector,
    PriorityClassName,
    Resources,
    Toleration,
    TopologySpreadConstraint,
)
from .quantity import parse_quantity

# Object store URIs MLflow reads and writes artifacts with: bucket or container is required.
# abfss:// is recognised here only so that its own refusal (ABFSS_REFUSED) is the one message.
OBJECT_STORE_URI = r"^(s3|gs|wasbs|abfss)://[^/?#\s]+(/[^\s]*)?$"
# A path on the TrackingServer's own volume.
VOLUME_PATH = r"^/data(/[-._a-zA-Z0-9]+)+/?$"
HTTP_URL = r"^https?://[^/?#\s]+(/[^\s]*)?$"
# A Kubernetes quantity in bytes, binary suffixes only (they map onto NGINX's k/m/g exactly).
BYTE_QUANTITY = r"^(0|[1-9][0-9]*(Ki|Mi|Gi|Ti)?)$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
# Prometheus' duration syntax (prometheus-operator's Duration): units largest first, e.g. 1m30s.
PROMETHEUS_DURATION = r"^(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$"
# An image reference (the distribution/reference grammar): a registry only where it has a dot,
# a port or is localhost; repository path components are lower case.
_REGISTRY_PART = r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?"
_REGISTRY = rf"(localhost(:[0-9]+)?|{_REGISTRY_PART}(\.{_REGISTRY_PART})+(:[0-9]+)?|{_REGISTRY_PART}:[0-9]+)"
_PATH_PART = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = rf"^({_REGISTRY}/)?{_PATH_PART}(/{_PATH_PART})*(:[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?(@sha256:[a-f0-9]{{64}})?$"
S3_URI = r"^s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/.*)?$"
GCS_URI = r"^gs://[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9](/.*)?$"
_AZURE_CLOUDS = r"core\.(windows\.net|chinacloudapi\.cn|usgovcloudapi\.net)"
AZURE_URI = rf"^wasbs://[a-z0-9]([-a-z0-9]{{1,61}}[a-z0-9])?@[a-z0-9]{{3,24}}\.blob\.{_AZURE_CLOUDS}(/.*)?$"
# Files and directories the operator keeps on the volume (SQLite, the auth database, FileStore).
RESERVED_VOLUME_PATHS = r"^/data/(mlflow\.db|auth\.db|mlruns)(/.*)?$"
DOT_SEGMENT = r"(^|/)\.\.?(/|$)"
AWS_REGION = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"
S3_COMPATIBLE_REGION = r"^[a-z0-9]+([-_][a-z0-9]+)*$"
ALLOWED_HOST = r"^([-a-zA-Z0-9.*?]+|\[[0-9a-fA-F:.*]+\])(:([0-9]{1,5}|\*))?$"
ORIGIN = r"^(\*|[a-z][-a-z0-9+.]*://[^/\s?#]+)$"


# MLflow writes abfss:// (ADLS Gen2's DFS endpoint) with azure-storage-file-datalake, which the
# server image does not ship, and no emulator of the DFS endpoint exists to test it against
# (Azurite serves Blob only). An ADLS Gen2 account also answers on its Blob endpoint
# (multi-protocol access), which wasbs:// reaches and the tests run against Azurite.
ABFSS_REFUSED = (
    "abfss:// (the Data Lake endpoint) is not supported: write to the same ADLS Gen2 account "
    "through its Blob endpoint, wasbs://<container>@<account>.blob.core.windows.net/<path>"
)


def abfss_refused(name: str) -> Rule:
    return string_rule(
        name, "!self.startsWith('abfss://')", lambda v: not v.startswith("abfss://"), ABFSS_REFUSED
    )


def _uri_rule(name: str, prefixes: tuple[str, ...], pattern: str, message: str) -> Rule:
    starts = " || ".join(f"self.startsWith({cel_str(p)})" for p in prefixes)
    return string_rule(
        name,
        f"!({starts}) || self.matches({cel_str(pattern)})",
        lambda v: not v.startswith(prefixes) or matches(pattern, v),
        message,
    )


# Where artifacts go, as MLflow reads the URI; the scheme itself is checked per field (rules.py).
ArtifactLocation = checked(
    str,
    _uri_rule(
        "s3-bucket", ("s3://",), S3_URI,
        "an s3:// URI starts with a bucket name (3 to 63 lower-case letters, digits, '.' and '-'), "
        "such as s3://mlflow-artifacts/team-a; a server's host:port belongs in artifacts.s3.endpointUrl",
    ),
    _uri_rule(
        "gcs-bucket", ("gs://",), GCS_URI,
        "a gs:// URI starts with a bucket name (lower-case letters, digits, '-', '_' and '.'), such as "
        "gs://mlflow-artifacts/team-a",
    ),
    _uri_rule(
        "azure-account", ("wasbs://",), AZURE_URI,
        "an Azure URI names the container and the storage account: "
        "wasbs://<container>@<account>.blob.core.windows.net/<path>",
    ),
    abfss_refused("abfss-refused"),
    string_rule(
        "volume-path-inside",
        f"!self.startsWith('/') || !self.matches({cel_str(DOT_SEGMENT)})",
        lambda v: not v.startswith("/") or not matches(DOT_SEGMENT, v),
        "a path on the volume must not have '.' or '..' segments: write a path under /data, "
        "such as /data/artifacts",
    ),
    string_rule(
        "volume-path-not-reserved",
        f"!self.matches({cel_str(RESERVED_VOLUME_PATHS)})",
        lambda v: not matches(RESERVED_VOLUME_PATHS, v),
        "/data/mlflow.db, /data/auth.db and /data/mlruns hold the backend and auth stores: "
        "store artifacts elsewhere, such as /data/artifacts",
    ),
    max_length=2048,
)

HostName = checked(
    str,
    string_rule(
        "host-name",
        f"size(self) <= 253 && self.matches({cel_str(HOSTNAME)}) && !self.matches('^[0-9.]+$')",
        lambda v: len(v) <= 253 and matches(HOSTNAME, v) and not matches(r"^[0-9.]+$", v),
        "must be a lower-case DNS name such as mlflow.team.example.com (a leading '*.' is "
        "allowed; an IP address is not)",
    ),
    min_length=1,
    max_length=253,
)
ImageReference = checked(
    str,
    pattern_rule(
        "image-reference",
        IMAGE_REFERENCE,
        "must be an image reference such as ghcr.io/team/mlflow-server:3.18.0 or "
        "registry.example.com/mlflow@sha256:<digest>: lower-case repository, no scheme (https://)",
    ),
    min_length=1,
    max_length=512,
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
        description="The pods' `check` init container retries the database and the artifact store "
        "up to this many seconds (0: one attempt) before it fails the pod's start; its result is "
        "BackendReachable and ArtifactStoreReachable. The migration Job waits as long for the database.",
    )


# --------------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------------


class S3Settings(ApiModel):
    """Amazon S3 or an S3-compatible server (MinIO, Ceph RGW, ...)."""

    cel_rules: ClassVar = (
        Rule(
            "s3-key-pair",
            "has(self.accessKeyId) == has(self.secretAccessKey)",
            "accessKeyId and secretAccessKey go together: set both, or neither to use the pod's "
            "identity (e.g. IRSA)",
            "secretAccessKey",
            lambda s: (s.access_key_id is None) == (s.secret_access_key is None),
        ),
        Rule(
            "s3-region",
            "!has(self.region) || self.region.matches(has(self.endpointUrl) ? "
            f"{cel_str(S3_COMPATIBLE_REGION)} : {cel_str(AWS_REGION)})",
            "region must be a region name such as eu-west-1 (with an S3-compatible endpointUrl: "
            "the server's region name, such as us-east-1)",
            "region",
            lambda s: s.region is None
            or matches(S3_COMPATIBLE_REGION if s.endpoint_url is not None else AWS_REGION, s.region),
        ),
    )

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
    """Google Cloud Storage or a GCS-compatible server."""

    endpoint_url: str | None = Field(
        default=None,
        max_length=2048,
        description="Endpoint of a GCS-compatible server (an emulator such as fake-gcs-server), "
        "e.g. http://fake-gcs.storage.svc:4443 (STORAGE_EMULATOR_HOST). google-cloud-storage "
        "sends no credentials to it, so serviceAccountKey does not go with it. Leave out for "
        "Google Cloud Storage.",
    )
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
    destination: Optional[ArtifactLocation] = Field(
        default=None,
        description="Proxied, Split and ArtifactsOnly: where the server stores artifacts "
        "(`--artifacts-destination`): s3://bucket/path, gs://bucket/path, "
        "wasbs://container@account.blob.core.windows.net/path (ADLS Gen2 accounts too, through "
        "their Blob endpoint; abfss:// is refused), or a path under /data (the TrackingServer's "
        "volume). Required "
        "in Split and ArtifactsOnly modes; defaults to /data/artifacts in Proxied mode.",
    )
    default_artifact_root: Optional[ArtifactLocation] = Field(
        default=None,
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


FRACTION_SUFFIX = r"[mun]$"  # milli-, micro-, nano-bytes: a slip for M or Mi


def _positive_bytes(value: str) -> bool:
    q = parse_quantity(value)
    return q is not None and q > 0 and not matches(FRACTION_SUFFIX, value)


StorageSize = checked(
    str,
    string_rule(
        "storage-size",
        "isQuantity(self) && quantity(self).isGreaterThan(quantity('0')) && "
        f"!self.matches({cel_str(FRACTION_SUFFIX)})",
        _positive_bytes,
        "must be a size in bytes greater than zero, such as 10Gi or 500Mi (m would mean thousandths "
        "of a byte: write M or Mi)",
    ),
    max_length=32,
)
StorageClassName = checked(str, dns_subdomain_rule("StorageClass name", "fast-ssd"), min_length=1, max_length=253)
AccessMode = Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]
AccessModes = checked(
    list[AccessMode],
    Rule(
        "read-write-once-pod-alone",
        "!('ReadWriteOncePod' in self) || size(self) == 1",
        "ReadWriteOncePod cannot be combined with other access modes",
        "",
        lambda modes: "ReadWriteOncePod" not in modes or len(modes) == 1,
    ),
    Rule(
        "access-modes-once",
        "self.all(m, self.exists_one(n, n == m))",
        "lists each access mode once",
        "",
        lambda modes: len(set(modes)) == len(modes),
    ),
    min_length=1,
    max_length=3,
)


class Storage(ApiModel):
    """The TrackingServer's volume, mounted at /data, created only when something lives on it:
    an embedded backend store (SQLite, FileStore), local artifacts, or the SQLite auth database."""

    size: StorageSize = Field(
        default="10Gi",
        description="Requested size of the PersistentVolumeClaim. It can grow later if the "
        "storage class allows expansion, never shrink.",
    )
    storage_class_name: Optional[StorageClassName] = Field(
        default=None,
        description="StorageClass of the claim; the cluster's default class when left out.",
    )
    access_modes: AccessModes = Field(
        default_factory=lambda: ["ReadWriteOnce"],
        description="Access modes of the claim. Several replicas sharing local artifacts need "
        "ReadWriteMany; an embedded database always runs one replica.",
        json_schema_extra={"default": ["ReadWriteOnce"]},
    )


class AdminSecretRef(ApiModel):
    """A Secret holding the basic-auth admin's user name and password."""

    name: ObjectName = Field(description="Name of the Secret.")
    username_key: SecretKey = Field(default="username", description="Key of the user name.")
    password_key: SecretKey = Field(default="password", description="Key of the password.")


# A token audience: any string a TokenRequest accepts, without whitespace.
AUDIENCE = r"^[^\s]{1,253}$"
Audience = checked(
    str,
    pattern_rule(
        "audience",
        AUDIENCE,
        "must be a token audience without spaces, such as mlflow.team-a",
    ),
    max_length=253,
)


class KubernetesAuth(ApiModel):
    """Kubernetes identities: ServiceAccount tokens checked by TokenReview, RBAC checked by
    SubjectAccessReview."""

    audience: Optional[Audience] = Field(
        default=None,
        description="The audience a client's token must be issued for (a projected "
        "serviceAccountToken volume's `audience`). Defaults to mlflow-operator.dev/<namespace>/<name>, "
        "so a token for this server is accepted by no other, and the API server's own tokens "
        "(audience of the cluster) are refused.",
    )


# The issuer of an OIDC provider: https only (tokens and the client secret cross it), no query or
# fragment (the discovery document is at <issuer>/.well-known/openid-configuration).
ISSUER_URL = r"^https://[^/?#\s]+(/[^?#\s]*)?$"
IssuerUrl = checked(
    str,
    pattern_rule(
        "issuer-url",
        ISSUER_URL,
        "must be the provider's https:// issuer URL without query or fragment, such as "
        "https://dex.example.com or https://login.example.com/realms/ml",
    ),
    max_length=512,
)
# OAuth 2.0 client ids are visible ASCII (RFC 6749, appendix A.1).
CLIENT_ID = r"^[!-~]{1,255}$"
ClientId = checked(
    str,
    pattern_rule(
        "client-id",
        CLIENT_ID,
        "must be the OAuth client id registered at the provider: visible ASCII, no spaces",
    ),
    max_length=255,
)
# A group name as a provider puts it in the groups claim; commas would split it in the proxy's
# header to the server (X-Forwarded-Groups).
GROUP_NAME = r"^[^,\s][^,]{0,254}$"
GroupName = checked(
    str,
    pattern_rule(
        "group-name",
        GROUP_NAME,
        "must be a group name as the provider's groups claim carries it, without commas and not "
        "starting with a space, such as ml-team or /org/ml",
    ),
    max_length=255,
)
CLAIM_NAME = r"^[A-Za-z0-9_:.\-/]{1,128}$"
ClaimName = checked(
    str,
    pattern_rule(
        "claim-name",
        CLAIM_NAME,
        "must be a claim name such as groups or roles",
    ),
    max_length=128,
)
REDIRECT_URL = r"^https?://[^/?#\s]+/oauth2/callback$"
RedirectUrl = checked(
    str,
    pattern_rule(
        "redirect-url",
        REDIRECT_URL,
        "must be the server's own address followed by /oauth2/callback, such as "
        "https://mlflow.team.example.com/oauth2/callback (register the same URL at the provider)",
    ),
    max_length=512,
)


class ConfigMapKeyRef(ApiModel):
    """A key of a ConfigMap in the TrackingServer's namespace."""

    name: ObjectName = Field(description="Name of the ConfigMap.")
    key: SecretKey = Field(description="Key in the ConfigMap.")


class OidcAuth(ApiModel):
    """OpenID Connect sign-in through an oauth2-proxy sidecar in every server pod. The server
    itself listens on the pod's loopback only, so every request (UI, API, artifacts) passes the
    proxy: browsers sign in at the provider, clients send the provider's ID token as bearer token
    (MLFLOW_TRACKING_TOKEN)."""

    issuer_url: IssuerUrl = Field(
        description="The provider's issuer URL (https). The proxy reads its discovery document "
        "and keys at start-up, and checks every bearer token's issuer, signature and expiry."
    )
    client_id: ClientId = Field(
        description="The OAuth client registered at the provider for this server. Bearer tokens "
        "must be issued for it (audience), so a token for another application is refused."
    )
    client_secret: SecretValue = Field(
        description="The client's secret, from a Secret (used only for the browser sign-in's code exchange)."
    )
    allowed_groups: Optional[list[GroupName]] = Field(
        default=None,
        max_length=64,
        description="Only members of one of these groups (in the groups claim) may use the server; "
        "anyone else who signs in gets 403. When left out, every user the provider signs in may.",
    )
    admin_group: Optional[GroupName] = Field(
        default=None,
        description="Members of this group may also delete (runs, experiments, models, tags, "
        "artifacts: every DELETE and delete... request); other allowed users get 403 for those. "
        "Its members need not be in allowedGroups. When left out, every allowed user may delete.",
    )
    scopes: list[ClaimName] = Field(
        default_factory=lambda: ["openid", "email", "profile", "groups"],
        min_length=1,
        max_length=16,
        description="Scopes the browser sign-in asks for; they must include openid, and whatever "
        "makes the provider put the groups claim in the ID token (Dex: groups).",
        json_schema_extra={"default": ["openid", "email", "profile", "groups"]},
    )
    groups_claim: ClaimName = Field(
        default="groups",
        description="The claim of the ID token that lists the user's groups.",
    )
    redirect_url: Optional[RedirectUrl] = Field(
        default=None,
        description="Where the provider sends browsers back after sign-in; register it at the "
        "provider. Defaults to the first ingress or gateway host (https with TLS): "
        "https://<host>/oauth2/callback; without one, the request's own host "
        "(http://localhost:5000/oauth2/callback through kubectl port-forward).",
    )
    ca_config_map_ref: Optional[ConfigMapKeyRef] = Field(
        default=None,
        description="A ConfigMap key holding the PEM CA certificates that sign the provider's "
        "TLS certificate, for a provider with a private CA (the image's system CAs otherwise).",
    )
    proxy_image: Optional[ImageReference] = Field(
        default=None,
        description="The oauth2-proxy image of the sidecar. Defaults to the pinned upstream "
        "release, quay.io/oauth2-proxy/oauth2-proxy:v7.15.6; set a mirror's copy for an "
        "air-gapped cluster.",
    )


class Auth(ApiModel):
    """Who may use the server."""

    type: Literal["None", "Basic", "Kubernetes", "OIDC"] = Field(
        default="None",
        description="None: no authentication (put the server behind your own proxy or VPN). "
        "Basic: MLflow's basic-auth app (`--app-name basic-auth`) with an admin user. "
        "Kubernetes: clients send a ServiceAccount token as bearer token (MLFLOW_TRACKING_TOKEN); "
        "the server checks it with a TokenReview and authorizes each request with a "
        "SubjectAccessReview on the subresource trackingservers/api of this TrackingServer "
        "(reads: get, list; writes: create, update, delete), so a RoleBinding grants access. "
        "OIDC: sign-in through an OpenID Connect provider (auth.oidc) by an oauth2-proxy sidecar; "
        "the server listens on the pod's loopback only.",
    )
    oidc: OidcAuth | None = Field(
        default=None,
        description="OIDC only (and required there): the provider, the client and who may sign in.",
    )
    kubernetes: KubernetesAuth | None = Field(
        default=None,
        description="Kubernetes only: settings of the token check.",
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


UploadSize = checked(
    int | str,
    Rule(
        "upload-size",
        f"type(self) == int ? self >= 0 : self.matches({cel_str(BYTE_QUANTITY)})",
        "must be a byte size with a binary suffix such as 5Gi, 512Mi or 64Ki, or 0 for unlimited",
        "",
        lambda v: v >= 0 if isinstance(v, int) else matches(BYTE_QUANTITY, v),
    ),
    json_schema_extra={"maxLength": 16},
)
AllowedHost = checked(
    str,
    pattern_rule(
        "allowed-host",
        ALLOWED_HOST,
        "must be a host name or pattern with an optional port, such as mlflow.example.com, "
        "*.example.com or mlflow:5000, not a URL",
    ),
    min_length=1,
    max_length=253,
)
CorsOrigin = checked(
    str,
    pattern_rule(
        "cors-origin",
        ORIGIN,
        "must be an origin: scheme://host[:port] without a path, such as "
        "https://notebooks.example.com (or *)",
    ),
    min_length=1,
    max_length=2048,
)


class Http(ApiModel):
    """How clients reach the server over HTTP."""

    max_upload_size: UploadSize = Field(
        default="5Gi",
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
    allowed_hosts: Optional[list[AllowedHost]] = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Host headers the server accepts (`--allowed-hosts`, DNS-rebinding "
        "protection; fnmatch patterns such as *.example.com). Default: the Ingress/HTTPRoute "
        "hosts, the Service's DNS names with and without :5000, the pod's IP, and localhost. "
        "Setting it replaces that list.",
    )
    cors_allowed_origins: Optional[list[CorsOrigin]] = Field(
        default=None,
        max_length=64,
        description="Origins allowed to make cross-origin requests (`--cors-allowed-origins`). "
        "Default: https:// (and, without TLS, http://) of each Ingress/HTTPRoute host, so the "
        "web UI works. Setting it replaces that list.",
    )


IngressClassName = checked(str, dns_subdomain_rule("IngressClass name", "nginx"), min_length=1, max_length=253)
TlsSecretName = checked(str, dns_subdomain_rule("Secret name", "mlflow-tls"), min_length=1, max_length=253)
API_GROUP = "(self == '' || " + cel_dns_subdomain("self") + ")"
GatewayGroup = checked(
    str,
    string_rule(
        "api-group",
        API_GROUP,
        lambda v: v == "" or is_dns_subdomain(v),
        "must be an API group such as gateway.networking.k8s.io, without a version",
    ),
    max_length=253,
)
KIND_NAME = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
GatewayKind = checked(
    str,
    pattern_rule("kind",KIND_NAME,"must be a kind such as Gateway or ListenerSet"),
    min_length=1,
    max_length=63,
)
SectionName = checked(str, dns_subdomain_rule("listener name", "https"), min_length=1, max_length=253)


class IngressSpec(ApiModel):
    """A Kubernetes Ingress in front of the server."""

    class_name: Optional[IngressClassName] = Field(
        default=None,
        description="IngressClass name, e.g. nginx. The cluster's default class when left out.",
    )
    hosts: list[HostName] = Field(
        min_length=1,
        max_length=16,
        description="Host names the Ingress answers for, e.g. [mlflow.team-a.example.com].",
    )
    tls_secret_name: Optional[TlsSecretName] = Field(
        default=None,
        description="A kubernetes.io/tls Secret for the hosts. HTTPS is served when set.",
    )
    annotations: Optional[Annotations] = Field(
        default=None,
        description="Extra Ingress annotations (e.g. cert-manager's). The NGINX body size and "
        "timeout annotations are derived from spec.http; set here they win.",
    )


class ParentReference(ApiModel):
    """A Gateway (or ListenerSet) the HTTPRoute attaches to."""

    name: ObjectName = Field(description="Name of the Gateway.")
    namespace: Optional[NamespaceName] = Field(
        default=None, description="Namespace of the Gateway; the route's own when left out."
    )
    section_name: Optional[SectionName] = Field(default=None, description="A listener of the Gateway, by name.")
    group: Optional[GatewayGroup] = Field(
        default=None, description="API group of the parent (gateway.networking.k8s.io)."
    )
    kind: Optional[GatewayKind] = Field(default=None, description="Kind of the parent (Gateway).")
    port: int | None = Field(default=None, ge=1, le=65535, description="A listener port of the Gateway.")


class GatewaySpec(ApiModel):
    """A Gateway API HTTPRoute in front of the server."""

    parent_refs: list[ParentReference] = Field(
        min_length=1, max_length=32, description="Gateways the route attaches to."
    )
    hostnames: Optional[list[HostName]] = Field(
        default=None,
        max_length=16,
        description="Host names the route matches. All the Gateway's host names when left out.",
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
    annotations: Optional[Annotations] = Field(default=None, description="Extra annotations of the Service(s).")


class ServiceAccountSpec(ApiModel):
    """The pods' ServiceAccount (<name>), created by the operator. Its API token is never
    mounted: the server does not talk to Kubernetes."""

    annotations: Optional[Annotations] = Field(
        default=None,
        description="Annotations, e.g. eks.amazonaws.com/role-arn or "
        "iam.gke.io/gcp-service-account for cloud storage access without keys.",
    )


# --------------------------------------------------------------------------------------------
# Operations: metrics, disruption, autoscaling, network policy, pod overrides
# --------------------------------------------------------------------------------------------


PrometheusDuration = checked(
    str,
    string_rule(
        "prometheus-duration",
        f"self != '' && self.matches({cel_str(PROMETHEUS_DURATION)})",
        lambda v: v != "" and matches(PROMETHEUS_DURATION, v),
        "must be a Prometheus duration such as 30s, 1m or 1m30s",
    ),
    max_length=32,
)


class ServiceMonitorSpec(ApiModel):
    """A prometheus-operator ServiceMonitor scraping the Services' metrics port."""

    enabled: bool = Field(default=False, description="Create the ServiceMonitor (needs its CRD).")
    interval: PrometheusDuration = Field(default="30s", description="Scrape interval, e.g. 30s or 1m30s.")
    labels: Optional[Labels] = Field(
        default=None,
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


def _int_or_percent(v: int | str) -> bool:
    if isinstance(v, int):
        return v >= 0
    return matches(r"^[0-9]{1,3}%$", v) and int(v[:-1]) <= 100


IntOrPercent = checked(
    int | str,
    Rule(
        "int-or-percent",
        "type(self) == int ? self >= 0 : (self.matches('^[0-9]{1,3}%$') && int(self.replace('%', '')) <= 100)",
        "must be a number of pods (0 or more) or a percentage from 0% to 100%, such as 1 or 50%",
        "",
        _int_or_percent,
    ),
    json_schema_extra={"maxLength": 16},
)


class PodDisruptionBudgetSpec(ApiModel):
    """A PodDisruptionBudget, created when more than one replica runs."""

    enabled: bool = Field(
        default=True, description="Create it whenever replicas > 1 or autoscaling is on."
    )
    min_available: Optional[IntOrPercent] = Field(
        default=None, description="Pods that must stay available (number or percentage)."
    )
    max_unavailable: Optional[IntOrPercent] = Field(
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
        le=10000,
        description="Average CPU utilization to keep, in percent of the CPU request (may exceed "
        "100 when pods may use more CPU than they request).",
    )


class NetworkPolicySpec(ApiModel):
    """A NetworkPolicy limiting who may connect to the pods' ports (5000, and 9090 with metrics)."""

    enabled: bool = Field(default=False, description="Create the NetworkPolicy.")
    ingress_from: Optional[list[NetworkPolicyPeer]] = Field(
        default=None,
        max_length=16,
        description="NetworkPolicyPeers allowed to connect (podSelector, namespaceSelector, "
        "ipBlock), e.g. your ingress controller's and Prometheus' namespaces. Pods of this "
        "namespace are always allowed. Kubelet probes are not affected.",
    )


class SeccompProfile(ApiModel):
    """Seccomp profile; only the kinds the `restricted` Pod Security Standard allows."""

    cel_rules: ClassVar = (
        Rule(
            "localhost-profile-relative",
            f"!has(self.localhostProfile) || (!self.localhostProfile.startsWith('/') && "
            f"!self.localhostProfile.matches({cel_str(DOT_SEGMENT)}))",
            "localhostProfile must be a path relative to the kubelet's seccomp directory, without "
            "'.' or '..' segments, such as profiles/mlflow.json",
            "localhostProfile",
            lambda p: p.localhost_profile is None
            or (not p.localhost_profile.startswith("/") and not matches(DOT_SEGMENT, p.localhost_profile)),
        ),
    )

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


# Variables the operator or the image's entrypoint sets, and where the spec sets them instead.
# (MLFLOW_OPERATOR_* as a whole belongs to the operator; see OPERATOR_ENV_PREFIX.)
OWNED_ENV: dict[str, str] = {
    "MLFLOW_BACKEND_STORE_URI": "set spec.backendStore.uri",
    "MLFLOW_REGISTRY_STORE_URI": "set spec.backendStore.registryStoreUri",
    "MLFLOW_ALLOW_FILE_STORE": "set spec.backendStore.type to FileStore",
    "MLFLOW_DEFAULT_ARTIFACT_ROOT": "set spec.artifacts.defaultArtifactRoot",
    "MLFLOW_ARTIFACTS_DESTINATION": "set spec.artifacts.destination",
    "MLFLOW_SERVE_ARTIFACTS": "set spec.artifacts.mode",
    "MLFLOW_ARTIFACTS_ONLY": "set spec.artifacts.mode",
    "MLFLOW_HOST": "the server listens on all addresses, port 5000",
    "MLFLOW_PORT": "the server listens on all addresses, port 5000",
    "MLFLOW_WORKERS": "set spec.workers",
    "MLFLOW_GUNICORN_OPTS": "set spec.workers and spec.http",
    "MLFLOW_UVICORN_OPTS": "set spec.workers and spec.http",
    "MLFLOW_EXPOSE_PROMETHEUS": "set spec.metrics.enabled",
    "PROMETHEUS_MULTIPROC_DIR": "set spec.metrics.enabled",
    "prometheus_multiproc_dir": "set spec.metrics.enabled",
    "MLFLOW_SERVER_ALLOWED_HOSTS": "set spec.http.allowedHosts",
    "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS": "set spec.http.corsAllowedOrigins",
    "MLFLOW_AUTH_CONFIG_PATH": "set spec.auth",
    "MLFLOW_AUTH_ADMIN_USERNAME": "set spec.auth.adminSecretRef",
    "MLFLOW_AUTH_ADMIN_PASSWORD": "set spec.auth.adminSecretRef",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "the operator generates it with spec.auth.type Basic",
    "MLFLOW_FLASK_SERVER_SECRET_KEY_FILE": "the operator generates it with spec.auth.type Basic",
    "MLFLOW_S3_ENDPOINT_URL": "set spec.artifacts.s3.endpointUrl",
    "MLFLOW_S3_IGNORE_TLS": "set spec.artifacts.s3.ignoreTls",
    "AWS_DEFAULT_REGION": "set spec.artifacts.s3.region",
    "AWS_REGION": "set spec.artifacts.s3.region",
    "AWS_ACCESS_KEY_ID": "set spec.artifacts.s3.accessKeyId",
    "AWS_SECRET_ACCESS_KEY": "set spec.artifacts.s3.secretAccessKey",
    "GOOGLE_APPLICATION_CREDENTIALS": "set spec.artifacts.gcs.serviceAccountKey",
    "STORAGE_EMULATOR_HOST": "set spec.artifacts.gcs.endpointUrl",
    "AZURE_STORAGE_CONNECTION_STRING": "set spec.artifacts.azure.connectionString",
    "AZURE_STORAGE_ACCESS_KEY": "set spec.artifacts.azure.accessKey",
}
OPERATOR_ENV_PREFIX = "MLFLOW_OPERATOR_"
_OWNED_ENV_CEL = "{" + ", ".join(f"{cel_str(k)}: {cel_str(v)}" for k, v in OWNED_ENV.items()) + "}"

EnvName = checked(
    str,
    pattern_rule(
        "env-name",
        ENV_NAME,
        "must be a variable name: letters, digits, '_', '-' and '.', not starting with a digit, "
        "such as MLFLOW_S3_UPLOAD_EXTRA_ARGS",
    ),
    min_length=1,
    max_length=253,
)


class EnvVar(ApiModel):
    """An extra environment variable (as in a Pod spec)."""

    cel_rules: ClassVar = (
        Rule(
            "env-operator-prefix",
            f"!self.name.startsWith({cel_str(OPERATOR_ENV_PREFIX)})",
            "MLFLOW_OPERATOR_* variables are set by the operator from the spec",
            "name",
            lambda e: not e.name.startswith(OPERATOR_ENV_PREFIX),
            reason=FORBIDDEN,
            message_expression="self.name + ' is set by the operator from the spec (MLFLOW_OPERATOR_* variables are its own)'",
            explain=lambda e: f"{e.name} is set by the operator from the spec (MLFLOW_OPERATOR_* variables are its own)",
        ),
        Rule(
            "env-owned",
            f"!(self.name in {cel_list(OWNED_ENV)})",
            "this variable is set by the operator: set the spec field for it instead",
            "name",
            lambda e: e.name not in OWNED_ENV,
            reason=FORBIDDEN,
            message_expression=f"self.name + ' is set by the operator: ' + {_OWNED_ENV_CEL}[self.name]",
            explain=lambda e: f"{e.name} is set by the operator: {OWNED_ENV[e.name]}",
        ),
        Rule(
            "env-one-value",
            "!(has(self.value) && has(self.valueFrom))",
            "value and valueFrom are mutually exclusive: set one of them",
            "valueFrom",
            lambda e: not (e.value is not None and e.value_from is not None),
            reason=FORBIDDEN,
        ),
    )
    name: EnvName = Field(description="Variable name.")
    value: Optional[str] = Field(default=None, max_length=32768, description="Literal value.")
    value_from: Optional[EnvVarSource] = Field(
        default=None, description="A source for the value (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef)."
    )


_ENV_ONCE = "self.exists_one(f, f.name == e.name)"
ExtraEnv = checked(
    list[EnvVar],
    Rule(
        "env-once",
        f"self.all(e, {_ENV_ONCE})",
        "sets a variable twice: list each name once",
        "",
        lambda env: len({e.name for e in env}) == len(env),
    ),
    max_length=64,
)


class PodTemplate(ApiModel):
    """Changes to the server pods; everything here applies to all the operator's pods."""

    annotations: Optional[Annotations] = Field(default=None, description="Extra pod annotations.")
    labels: Optional[Labels] = Field(
        default=None,
        description="Extra pod labels; app.kubernetes.io/* labels belong to the operator.",
    )
    node_selector: Optional[NodeSelector] = Field(default=None, description="Node labels the pods must run on.")
    tolerations: Optional[list[Toleration]] = Field(
        default=None, max_length=32, description="Tolerations (as in a Pod spec)."
    )
    affinity: Optional[Affinity] = Field(default=None, description="Affinity (as in a Pod spec).")
    topology_spread_constraints: Optional[list[TopologySpreadConstraint]] = Field(
        default=None, max_length=16, description="Topology spread constraints (as in a Pod spec)."
    )
    priority_class_name: Optional[PriorityClassName] = Field(default=None, description="PriorityClass.")
    extra_env: Optional[ExtraEnv] = Field(
        default=None,
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

    class_name: Optional[ObjectName] = Field(
        default=None,
        description="The TrackingServerClass whose defaults, enforced fields, artifact store and "
        "exposure this server gets (`kubectl get trackingserverclasses`). Left out: the class "
        "annotated mlflow-operator.dev/is-default-class=true when the server is first reconciled, "
        "else none. A value the team sets wins over a class default, except for the class's "
        "enforced fields. With a class the rules across fields (replicas with SQLite, ...) hold for the "
        "spec the class and this one make together: the operator checks it (condition "
        "ClassApplied), as does `mlflow-operator render --class`.",
    )
    image: Optional[ImageReference] = Field(
        default=None,
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

