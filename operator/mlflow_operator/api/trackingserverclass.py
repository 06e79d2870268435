"""The TrackingServerClass: what a platform team decides once for many teams' servers.

A cluster-scoped object, like a StorageClass or an IngressClass. A TrackingServer names it in
`spec.className` (or gets the class annotated as the default). The class carries:
- `defaults`: any part of a TrackingServer spec, merged under the team's spec;
- `enforced`: top-level spec fields a team may not override (the class's value applies);
- `artifacts`: an artifact destination per server, from a template, and the ServiceAccount
  annotations that give each server its cloud identity (IRSA, GKE, Azure workload identity);
- `exposure`: an Ingress class or Gateway, a host per server from a template, TLS annotations.

How a class and a spec combine is pure (render/classes.py): `mlflow-operator render --class`
shows the result without a cluster.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, ValidationError

from ..constants import API_VERSION, CLASS_KIND
from .base import ApiModel, ObjectName, SecretKey
from typing import Annotated

from .cel import ANNOTATION_KEY_RULE, RULES_ERROR, Rule, cel_str, checked, matches, string_rule
from .kubetypes import Annotations
from .spec import IngressClassName, ParentReference, TrackingServerSpec, abfss_refused
from .trackingserver import FieldError, InvalidTrackingServer, ObjectMeta, _field_errors, field_errors_of

PLACEHOLDERS = ("{namespace}", "{name}")
# Text with {namespace} and {name} as its only placeholders (no other braces).
TEMPLATE = r"^([^{}]|\{namespace\}|\{name\})*$"
OBJECT_STORE_TEMPLATE = r"^(s3|gs|wasbs|abfss)://[^/?#\s]+/"


def _template(what: str, max_length: int, *extra: Rule) -> Any:
    return checked(
        str,
        string_rule(
            f"{what}-placeholders",
            f"self.matches({cel_str(TEMPLATE)})",
            lambda v: matches(TEMPLATE, v),
            "may use only the placeholders {namespace} and {name} (no other braces)",
        ),
        *extra,
        min_length=1,
        max_length=max_length,
    )


def _per_server(what: str, example: str) -> Rule:
    """A template that leaves out a placeholder gives two teams' servers the same value."""
    return string_rule(
        f"{what}-per-server",
        "self.contains('{namespace}') && self.contains('{name}')",
        lambda v: all(p in v for p in PLACEHOLDERS),
        f"must contain both {{namespace}} and {{name}}, so that no two servers share it, such as {example}",
    )


DestinationTemplate = _template(
    "destination-template",
    1024,
    _per_server("destination-template", "s3://ml-artifacts/{namespace}/{name}"),
    string_rule(
        "destination-template-object-store",
        f"self.matches({cel_str(OBJECT_STORE_TEMPLATE)})",
        lambda v: matches(OBJECT_STORE_TEMPLATE, v),
        "must be an object store URI with a bucket and a path: s3://, gs:// or wasbs://, "
        "such as s3://ml-artifacts/{namespace}/{name}",
    ),
    abfss_refused("destination-template-abfss-refused"),
)
HostTemplate = _template(
    "host-template",
    253,
    _per_server("host-template", "{name}.{namespace}.mlflow.example.com"),
    string_rule(
        "host-template-lower-case",
        "!self.matches('[A-Z_/:]')",
        lambda v: not matches("[A-Z_/:]", v),
        "must be a host name (lower case, no scheme, port or path), such as "
        "{name}.{namespace}.mlflow.example.com",
    ),
)


# Values bounded (and few entries) so that the API server's cost estimate of the rule stays low.
AnnotationTemplates = checked(
    dict[str, Annotated[str, Field(max_length=1024)]],
    ANNOTATION_KEY_RULE,
    Rule(
        "annotation-templates",
        f"self.all(k, self[k].matches({cel_str(TEMPLATE)}))",
        "annotation values may use only the placeholders {namespace} and {name} (no other braces)",
        "",
        lambda a: all(matches(TEMPLATE, v) for v in a.values()),
    ),
    max_length=16,
)


class MinioAdminRef(ApiModel):
    """A Secret in the operator's own namespace with MinIO's admin keys (teams cannot read it)."""

    name: ObjectName = Field(
        description="Name of the Secret, in the operator's namespace, with the keys access-key-id "
        "and secret-access-key of a MinIO account that may add users and policies (admin:CreateUser, "
        "admin:CreatePolicy, admin:AttachUserOrGroupPolicy; the root user can).",
    )


MINIO_ENDPOINT = r"^https?://[^/?#\s]+/?$"
MinioEndpoint = checked(
    str,
    string_rule(
        "minio-endpoint",
        f"self.matches({cel_str(MINIO_ENDPOINT)})",
        lambda v: matches(MINIO_ENDPOINT, v),
        "must be http:// or https:// and a host, with no path, such as http://minio.storage.svc:9000",
    ),
    max_length=2048,
)


class ClassMinio(ApiModel):
    """Per-server MinIO credentials, made through MinIO's admin API."""

    endpoint_url: MinioEndpoint = Field(
        description="MinIO's S3 endpoint, e.g. http://minio.storage.svc:9000: the servers' "
        "artifacts.s3.endpointUrl, and where the operator calls MinIO's admin API.",
    )
    region: Optional[str] = Field(default=None, max_length=64, description="MinIO's region (artifacts.s3.region), e.g. us-east-1.")
    admin_secret_ref: MinioAdminRef = Field(description="MinIO's admin keys, in the operator's namespace.")


class ClassArtifacts(ApiModel):
    """Where each server of the class keeps its artifacts, and the identity it reaches them with."""

    destination_template: DestinationTemplate = Field(
        description="Each server's artifacts.destination, with {namespace} and {name} replaced by "
        "the TrackingServer's, e.g. s3://ml-artifacts/{namespace}/{name}. The prefix is the server's "
        "alone; give each server's identity access to its prefix only.",
    )
    service_account_annotations: Optional[AnnotationTemplates] = Field(
        default=None,
        description="Annotations of each server's ServiceAccount, {namespace} and {name} replaced: "
        "the cloud identity the pods get without keys, e.g. eks.amazonaws.com/role-arn: "
        "arn:aws:iam::123456789012:role/mlflow-{namespace}-{name} (IRSA), "
        "iam.gke.io/gcp-service-account: mlflow-{name}@project.iam.gserviceaccount.com (GKE) or "
        "azure.workload.identity/client-id (with the pod label azure.workload.identity/use in "
        "defaults.podTemplate.labels).",
    )
    minio: Optional[ClassMinio] = Field(
        default=None,
        description="Give each server its own MinIO user, whose policy allows its destination's "
        "prefix only (s3://bucket/<prefix>/...), made through MinIO's admin API. Its keys go once into "
        "the Secret <name>-s3 (keys access-key-id, secret-access-key) in the team's namespace, which "
        "artifacts.s3 then names; the destination template must be s3://.",
    )

    cel_rules: ClassVar = (
        Rule(
            "minio-s3",
            "!has(self.minio) || self.destinationTemplate.startsWith('s3://')",
            "minio gives each server S3 keys: destinationTemplate must be s3://bucket/..., such as "
            "s3://ml-artifacts/{namespace}/{name}",
            "destinationTemplate",
            lambda a: a.minio is None or a.destination_template.startswith("s3://"),
        ),
    )


class ClassExposure(ApiModel):
    """How each server of the class is reached from outside the cluster."""

    host_template: HostTemplate = Field(
        description="Each server's host name, {namespace} and {name} replaced, e.g. "
        "{name}.{namespace}.mlflow.example.com. Each label of the result must stay within 63 "
        "characters: a server whose host would not is refused with a condition.",
    )
    ingress_class_name: Optional[IngressClassName] = Field(
        default=None,
        description="Expose each server with an Ingress of this IngressClass (the default one when "
        "neither this nor gatewayParentRefs is set).",
    )
    gateway_parent_refs: Optional[list[ParentReference]] = Field(
        default=None,
        max_length=8,
        description="Expose each server with an HTTPRoute attached to these Gateways instead of an Ingress.",
    )
    tls: bool = Field(
        default=True,
        description="HTTPS: an Ingress gets the TLS Secret <name>-tls for its host (issued by "
        "cert-manager through `annotations`); an HTTPRoute is marked as served over TLS.",
    )
    annotations: Optional[Annotations] = Field(
        default=None,
        description="Annotations of each Ingress, e.g. cert-manager.io/cluster-issuer: letsencrypt.",
    )

    cel_rules: ClassVar = (
        Rule(
            "exposure-one-kind",
            "!has(self.ingressClassName) || !has(self.gatewayParentRefs)",
            "ingressClassName and gatewayParentRefs exclude each other: a server is exposed by an "
            "Ingress or by an HTTPRoute",
            "gatewayParentRefs",
            lambda e: e.ingress_class_name is None or e.gateway_parent_refs is None,
        ),
        Rule(
            "exposure-annotations-ingress",
            "!has(self.annotations) || !has(self.gatewayParentRefs)",
            "annotations are the Ingress's: an HTTPRoute carries none (its TLS is the Gateway's)",
            "annotations",
            lambda e: e.annotations is None or e.gateway_parent_refs is None,
        ),
    )


class AdminUriRef(ApiModel):
    """A Secret key in the operator's own namespace (teams cannot read it)."""

    name: ObjectName = Field(description="Name of the Secret, in the operator's namespace.")
    key: SecretKey = Field(default="uri", description="Key holding the admin URI.")


class ClassDatabase(ApiModel):
    """A shared database server on which the operator creates each server's database and role."""

    engine: Literal["PostgreSQL", "MySQL"] = Field(
        default="PostgreSQL",
        description="PostgreSQL: per server a database and a role that owns it and nothing else "
        "(CONNECT revoked from PUBLIC). MySQL (MariaDB too): per server a database and a user with "
        "every privilege on it and none elsewhere. Either way a second database for basic-auth when "
        "auth is on.",
    )
    admin_secret_ref: AdminUriRef = Field(
        description="The admin URI of an account that may create roles (users) and databases, in a "
        "Secret in the operator's namespace: postgresql://admin:password@host:5432/postgres, or "
        "mysql://admin:password@host:3306/ (an account with CREATE USER and GRANT OPTION). The host "
        "is the one the teams' pods reach too.",
    )


# Top-level TrackingServer spec fields a class may enforce (className is the team's choice).
ENFORCEABLE = tuple(
    field.alias or name for name, field in TrackingServerSpec.model_fields.items() if name != "class_name"
)


def _has(path: str) -> str:
    """CEL: every step of a dotted path under self is present."""
    parts = path.split(".")
    return " && ".join("has(self." + ".".join(parts[: i + 1]) + ")" for i in range(len(parts)))


def _dig(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _not_in_defaults(path: str, unless: str | None, message: str) -> Rule:
    cel = f"!({_has('defaults.' + path)})"
    if unless:
        cel = f"!has(self.{unless}) || {cel}"
    return Rule(
        f"defaults-{path.replace('.', '-')}",
        cel,
        message,
        f"defaults.{path}",
        lambda s: (unless is not None and getattr(s, unless) is None) or _dig(s.defaults, path) is None,
    )


class TrackingServerClassSpec(ApiModel):
    """What every TrackingServer of this class gets."""

    defaults: Optional[dict[str, Any]] = Field(
        default=None,
        description="Any part of a TrackingServer spec, merged under each team's spec: a field "
        "the team leaves out (or at its built-in default) takes the class's value; maps merge key "
        "by key, lists and values are replaced whole.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    enforced: Optional[list[Literal[ENFORCEABLE]]] = Field(  # type: ignore[valid-type]
        default=None,
        max_length=len(ENFORCEABLE),
        description="Top-level spec fields a team may not set (e.g. auth, networkPolicy, image): "
        "the class's value (defaults, or the built-in default) applies. A server whose spec sets "
        "one differently runs with the class's value and says so in its ClassApplied condition.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    artifacts: ClassArtifacts | None = Field(
        default=None, description="Each server's artifact destination and cloud identity."
    )
    exposure: ClassExposure | None = Field(
        default=None, description="Each server's host name, Ingress or HTTPRoute, and TLS."
    )
    database: ClassDatabase | None = Field(
        default=None,
        description="Provision each server's database: the operator creates a database and a role "
        "with a generated password on this server, and writes the Secret <name>-database (keys uri, "
        "auth-uri) into the team's namespace once; it is never rotated, and kept with the database "
        "and role when the server is deleted (a server of the same name re-attaches).",
    )

    cel_rules: ClassVar = (
        _not_in_defaults(
            "artifacts.destination", "artifacts",
            "artifacts.destinationTemplate sets each server's destination: leave defaults.artifacts.destination out",
        ),
        _not_in_defaults(
            "serviceAccount.annotations", "artifacts",
            "artifacts.serviceAccountAnnotations sets each server's ServiceAccount annotations: "
            "write them there",
        ),
        _not_in_defaults(
            "backendStore", "database",
            "database provisions each server's backend store: leave defaults.backendStore out",
        ),
        _not_in_defaults(
            "ingress", "exposure", "exposure sets each server's Ingress or HTTPRoute: leave defaults.ingress out"
        ),
        _not_in_defaults(
            "gateway", "exposure", "exposure sets each server's Ingress or HTTPRoute: leave defaults.gateway out"
        ),
        _not_in_defaults(
            "ingress.hosts", None,
            "every server of the class would claim the same host: use exposure.hostTemplate",
        ),
        _not_in_defaults(
            "gateway.hostnames", None,
            "every server of the class would claim the same host: use exposure.hostTemplate",
        ),
    )


class TrackingServerClass(ApiModel):
    api_version: Literal["mlflow-operator.dev/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["TrackingServerClass"] = CLASS_KIND
    metadata: ObjectMeta
    spec: TrackingServerClassSpec = Field(default_factory=TrackingServerClassSpec)

    @property
    def name(self) -> str:
        return self.metadata.name


def _partial_errors(defaults: dict[str, Any]) -> list[FieldError]:
    """Errors of `defaults` as part of a spec: its values must be what the spec accepts, but a
    section may be partial (a required field or a rule across fields can be completed by the
    team's spec). Inside lists and maps, values are whole and checked whole, as the API server
    checks them against the class's schema (crd.partial_schema)."""
    try:
        TrackingServerSpec.model_validate(defaults)
        return []
    except ValidationError as exc:
        kept = []
        for err in exc.errors(include_url=False):
            inside_list = any(isinstance(part, int) for part in err["loc"])
            if not inside_list and err["type"] == "missing":
                continue
            if not inside_list and err["type"] == RULES_ERROR and all(f for f, _ in err["ctx"]["violations"]):
                continue  # a rule across a section's fields (it names one), which the team's spec may complete
            if err["type"] == "extra_forbidden":
                err = {**err, "loc": ("spec", "defaults", *err["loc"])}  # named as the API server names it
            kept.append(err)
        return field_errors_of(kept)


def load_trackingserverclass(obj: Any) -> TrackingServerClass:
    """Validate a TrackingServerClass (a dict as read from YAML or the API, or a model)."""
    if isinstance(obj, TrackingServerClass):
        return obj
    if not isinstance(obj, dict):
        raise InvalidTrackingServer([FieldError("(root)", "a TrackingServerClass must be a mapping")])
    errors: list[FieldError] = []
    cls = None
    try:
        cls = TrackingServerClass.model_validate(obj)
    except ValidationError as exc:
        errors += _field_errors(exc)
    spec = obj.get("spec")
    defaults = spec.get("defaults") if isinstance(spec, dict) else None
    if isinstance(defaults, dict):
        # The class's schema has no defaults.className (crd.partial_schema): the API server's words.
        if "className" in defaults:
            errors.append(FieldError("spec.defaults.className", 'unknown field "spec.defaults.className"'))
        errors += [e if e.path.startswith("spec.defaults.") else FieldError("spec.defaults." + e.path, e.message)
                   for e in _partial_errors({k: v for k, v in defaults.items() if k != "className"})]
    if errors or cls is None:
        raise InvalidTrackingServer(errors)
    return cls
