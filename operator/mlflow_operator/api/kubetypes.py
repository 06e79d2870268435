"""Kubernetes types the spec passes through to the pods, policies and routes: the shapes of
Kubernetes' own API (core/v1, networking/v1) with the checks its validation makes, written as CEL
rules so the API server refuses a TrackingServer whose children it would refuse later.

Only the fields a tracking server needs are modelled; unknown fields are errors.
"""
from __future__ import annotations

import ipaddress
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import Field

from .base import ApiModel, ObjectName, SecretKey
from .cel import (
    ANNOTATION_KEY_RULE,
    FORBIDDEN,
    LABEL_KEY_RULE,
    LABEL_VALUE,
    LABEL_VALUE_RULE,
    Rule,
    cel_list,
    cel_qualified_name,
    cel_str,
    checked,
    dns_label_rule,
    dns_subdomain_rule,
    is_qualified_name,
    matches,
    string_rule,
)
from .quantity import cel_is_quantity, cel_quantity, parse_quantity

# ---- labels, annotations, names ---------------------------------------------------------------

# Values are bounded for the rules' cost estimate; the value rule itself allows 63 characters.
_LabelMapValue = Annotated[str, Field(max_length=253)]
Labels = checked(dict[str, _LabelMapValue], LABEL_KEY_RULE, LABEL_VALUE_RULE, max_length=64)
NodeSelector = checked(dict[str, _LabelMapValue], LABEL_KEY_RULE, LABEL_VALUE_RULE, max_length=32)
Annotations = checked(dict[str, str], ANNOTATION_KEY_RULE, max_length=64)
LabelKey = checked(
    str,
    string_rule(
        "label-key",
        cel_qualified_name("self"),
        is_qualified_name,
        "must be a label key: an optional DNS prefix and '/', then at most 63 letters, digits, "
        "'-', '_' or '.' starting and ending with a letter or digit, such as "
        "topology.kubernetes.io/zone",
    ),
    min_length=1,
    max_length=317,
)
LabelValue = checked(
    str,
    string_rule(
        "label-value",
        f"self.matches({cel_str(LABEL_VALUE)})",
        lambda v: matches(LABEL_VALUE, v),
        "must be a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending "
        "with a letter or digit, such as ml-pool",
    ),
    max_length=63,
)
NamespaceName = checked(str, dns_label_rule("namespace name", "team-a"), min_length=1, max_length=63)
PriorityClassName = checked(str, dns_subdomain_rule("PriorityClass name", "high-priority"), min_length=1, max_length=253)


# ---- label selectors --------------------------------------------------------------------------


def _values_rule(set_ops: tuple[str, ...], no_values_ops: tuple[str, ...]) -> Rule:
    return Rule(
               "selector-values",
               f"self.operator in {cel_list(set_ops)} ? (has(self.values) && size(self.values) > 0) : "
        f"(self.operator in {cel_list(no_values_ops)} ? (!has(self.values) || size(self.values) == 0) : true)",
               f"operators {', '.join(set_ops)} need at least one value; {', '.join(no_values_ops)} take no values",
               "values",
               lambda r: (bool(r.values) if r.operator in set_ops else (not r.values if r.operator in no_values_ops else True)),
           )


class LabelSelectorRequirement(ApiModel):
    """One expression of a label selector."""

    cel_rules: ClassVar = (_values_rule(("In", "NotIn"), ("Exists", "DoesNotExist")),)
    key: LabelKey = Field(description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: Optional[list[LabelValue]] = Field(default=None, max_length=16, description="Values for In and NotIn.")


class LabelSelector(ApiModel):
    """A label selector (as in Kubernetes); an empty selector selects everything."""

    match_labels: Optional[Labels] = Field(default=None, description="Labels that must all match.")
    match_expressions: Optional[list[LabelSelectorRequirement]] = Field(
        default=None, max_length=8, description="Expressions that must all match."
    )


# ---- tolerations, affinity, topology spread ---------------------------------------------------


class Toleration(ApiModel):
    """A toleration (as in a Pod spec)."""

    cel_rules: ClassVar = (
        Rule(
            "toleration-exists-no-value",
            "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
            "a toleration with operator Exists matches any value: leave value out",
            "value",
            lambda t: t.operator != "Exists" or not t.value,
            reason=FORBIDDEN,
        ),
        Rule(
            "toleration-no-key-exists",
            "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
            "a toleration without a key must have operator Exists (it then tolerates every taint)",
            "operator",
            lambda t: bool(t.key) or t.operator == "Exists",
        ),
        Rule(
            "toleration-seconds-no-execute",
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerationSeconds only applies to effect NoExecute",
            "tolerationSeconds",
            lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
            reason=FORBIDDEN,
        ),
    )
    key: Optional[LabelKey] = Field(default=None, description="Taint key; left out with operator Exists: every taint.")
    operator: Optional[Literal["Exists", "Equal"]] = Field(default=None, description="Exists or Equal (default).")
    value: Optional[LabelValue] = Field(default=None, description="Taint value, with operator Equal.")
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = Field(
        default=None, description="NoSchedule, PreferNoSchedule or NoExecute; all effects when left out."
    )
    toleration_seconds: Optional[int] = Field(default=None, description="NoExecute only: how long the pod stays bound.")


class NodeSelectorRequirement(ApiModel):
    """One node selector expression."""

    cel_rules: ClassVar = (
        _values_rule(("In", "NotIn"), ("Exists", "DoesNotExist")),
        Rule(
            "node-selector-gt-lt",
            "!(self.operator in ['Gt', 'Lt']) || (has(self.values) && size(self.values) == 1 && "
            "self.values[0].matches('^-?[0-9]+$'))",
            "operators Gt and Lt need exactly one value, an integer",
            "values",
            lambda r: r.operator not in ("Gt", "Lt") or (r.values is not None and len(r.values) == 1 and matches(r"^-?[0-9]+$", r.values[0])),
        ),
    )
    key: LabelKey = Field(description="The node label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="In, NotIn, Exists, DoesNotExist, Gt or Lt."
    )
    values: Optional[list[LabelValue]] = Field(default=None, max_length=16, description="Values of the expression.")


class NodeSelectorTerm(ApiModel):
    """Node selector expressions that must all match."""

    match_expressions: Optional[list[NodeSelectorRequirement]] = Field(
        default=None, max_length=16, description="Expressions on node labels."
    )
    match_fields: Optional[list[NodeSelectorRequirement]] = Field(
        default=None, max_length=16, description="Expressions on node fields (metadata.name)."
    )


class NodeSelectorSpec(ApiModel):
    """Terms of which at least one must match."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1, max_length=16, description="Node selector terms (at least one; any one of them must match)."
    )


class PreferredSchedulingTerm(ApiModel):
    """A weighted node preference."""

    weight: int = Field(ge=1, le=100, description="Weight, 1 to 100.")
    preference: NodeSelectorTerm = Field(description="The preferred nodes.")


class NodeAffinity(ApiModel):
    """Node affinity (as in a Pod spec)."""

    required_during_scheduling_ignored_during_execution: Optional[NodeSelectorSpec] = Field(
        default=None, description="Nodes the pods must run on."
    )
    preferred_during_scheduling_ignored_during_execution: Optional[list[PreferredSchedulingTerm]] = Field(
        default=None, max_length=16, description="Nodes the pods prefer."
    )


class PodAffinityTerm(ApiModel):
    """Pods (by labels) near which the pods must or must not run."""

    label_selector: Optional[LabelSelector] = Field(default=None, description="The pods' labels.")
    namespace_selector: Optional[LabelSelector] = Field(default=None, description="Namespaces of the pods.")
    namespaces: Optional[list[NamespaceName]] = Field(default=None, max_length=16, description="Namespaces of the pods.")
    topology_key: LabelKey = Field(description="Node label defining the topology domain, e.g. kubernetes.io/hostname.")
    match_label_keys: Optional[list[LabelKey]] = Field(default=None, max_length=16, description="Pod label keys to match.")
    mismatch_label_keys: Optional[list[LabelKey]] = Field(default=None, max_length=16, description="Pod label keys to mismatch.")


class WeightedPodAffinityTerm(ApiModel):
    """A weighted pod (anti-)affinity preference."""

    weight: int = Field(ge=1, le=100, description="Weight, 1 to 100.")
    pod_affinity_term: PodAffinityTerm = Field(description="The term.")


class PodAffinity(ApiModel):
    """Pod affinity or anti-affinity (as in a Pod spec)."""

    required_during_scheduling_ignored_during_execution: Optional[list[PodAffinityTerm]] = Field(
        default=None, max_length=16, description="Terms that must hold."
    )
    preferred_during_scheduling_ignored_during_execution: Optional[list[WeightedPodAffinityTerm]] = Field(
        default=None, max_length=16, description="Terms preferred."
    )


class Affinity(ApiModel):
    """Affinity (as in a Pod spec)."""

    node_affinity: Optional[NodeAffinity] = Field(default=None, description="Node affinity.")
    pod_affinity: Optional[PodAffinity] = Field(default=None, description="Pod affinity.")
    pod_anti_affinity: Optional[PodAffinity] = Field(default=None, description="Pod anti-affinity.")


class TopologySpreadConstraint(ApiModel):
    """A topology spread constraint (as in a Pod spec)."""

    cel_rules: ClassVar = (
        Rule(
            "min-domains-do-not-schedule",
            "!has(self.minDomains) || self.whenUnsatisfiable == 'DoNotSchedule'",
            "minDomains only applies with whenUnsatisfiable DoNotSchedule",
            "minDomains",
            lambda c: c.min_domains is None or c.when_unsatisfiable == "DoNotSchedule",
            reason=FORBIDDEN,
        ),
    )
    max_skew: int = Field(ge=1, description="Largest allowed difference of pod counts between domains (at least 1).")
    topology_key: LabelKey = Field(description="Node label defining the domains, e.g. topology.kubernetes.io/zone.")
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(description="DoNotSchedule or ScheduleAnyway.")
    label_selector: Optional[LabelSelector] = Field(default=None, description="Pods counted (the server's own labels).")
    min_domains: Optional[int] = Field(default=None, ge=1, description="DoNotSchedule only: fewest eligible domains.")
    node_affinity_policy: Optional[Literal["Honor", "Ignore"]] = Field(default=None, description="Honor or Ignore.")
    node_taints_policy: Optional[Literal["Honor", "Ignore"]] = Field(default=None, description="Honor or Ignore.")
    match_label_keys: Optional[list[LabelKey]] = Field(default=None, max_length=16, description="Pod label keys to match.")


# ---- container resources ----------------------------------------------------------------------

Quantity = checked(
    int | str,
    Rule(
        "quantity",
        f"{cel_is_quantity('self')} && !{cel_quantity('self')}.isLessThan(quantity('0'))",
        "must be a non-negative quantity such as 500m, 2, 512Mi or 1Gi",
        "",
        lambda v: (q := parse_quantity(v)) is not None and q >= 0,
    ),
    json_schema_extra={"maxLength": 64},
)

CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_RESOURCE_NAME_CEL = (
    f"k in {cel_list(CONTAINER_RESOURCES)} || k.startsWith('hugepages-') || "
    f"(k.contains('/') && !k.contains('kubernetes.io/') && {cel_qualified_name('k')})"
)


def _resource_name_ok(k: str) -> bool:
    if k in CONTAINER_RESOURCES or k.startswith("hugepages-"):
        return True
    return "/" in k and "kubernetes.io/" not in k and is_qualified_name(k)


RESOURCE_NAME_SENTENCE = (
    "is not a container resource: use cpu, memory, ephemeral-storage, hugepages-<size> or an "
    "extended resource such as nvidia.com/gpu (the volume's size is spec.storage.size)"
)
RESOURCE_NAMES_RULE = Rule(
                          "resource-names",
                          f"self.all(k, {_RESOURCE_NAME_CEL})",
                          f"one of the keys {RESOURCE_NAME_SENTENCE}",
                          "",
                          lambda m: all(_resource_name_ok(k) for k in m),
                          message_expression=f"'key ' + self.filter(k, !({_RESOURCE_NAME_CEL}))[0] + {cel_str(' ' + RESOURCE_NAME_SENTENCE)}",
                          explain=lambda m: f"key {next(k for k in m if not _resource_name_ok(k))} {RESOURCE_NAME_SENTENCE}",
                      )
ResourceList = checked(dict[str, Quantity], RESOURCE_NAMES_RULE, max_length=16)


def _limit_below_request(r: Any) -> str | None:
    for name, request in (r.requests or {}).items():
        limit = (r.limits or {}).get(name)
        if limit is None:
            continue
        lq, rq = parse_quantity(limit), parse_quantity(request)
        if lq is not None and rq is not None and lq < rq:
            return name
    return None


_LIMIT_OK = (
    f"!(k in self.limits) || !{cel_is_quantity('self.limits[k]')} || !{cel_is_quantity('self.requests[k]')} || "
    f"{cel_quantity('self.limits[k]')}.compareTo({cel_quantity('self.requests[k]')}) >= 0"
)


class Resources(ApiModel):
    """Compute resources of a container (as in a Pod spec)."""

    cel_rules: ClassVar = (
        Rule(
            "limits-above-requests",
            f"!has(self.requests) || !has(self.limits) || self.requests.all(k, {_LIMIT_OK})",
            "every limit must be at least its request",
            "limits",
            lambda r: _limit_below_request(r) is None,
            message_expression="'limits.' + self.requests.filter(k, !(" + _LIMIT_OK + "))[0] + "
                "' must be at least requests.' + self.requests.filter(k, !(" + _LIMIT_OK + "))[0]",
            explain=lambda r: f"limits.{_limit_below_request(r)} must be at least requests.{_limit_below_request(r)}",
        ),
    )
    requests: Optional[ResourceList] = Field(default=None, description="Minimum resources, e.g. {cpu: 100m, memory: 512Mi}.")
    limits: Optional[ResourceList] = Field(default=None, description="Maximum resources, e.g. {memory: 2Gi}.")


# ---- environment variables --------------------------------------------------------------------


class KeySelector(ApiModel):
    """A key of a Secret or ConfigMap."""

    name: ObjectName = Field(description="Name of the Secret or ConfigMap.")
    key: SecretKey = Field(description="The key.")
    optional: Optional[bool] = Field(default=None, description="Whether the key may be missing.")


FIELD_PATHS = (
    r"^(metadata\.(name|namespace|uid)|metadata\.(labels|annotations)\['[^']+'\]|"
    r"spec\.(nodeName|serviceAccountName)|status\.(hostIP|hostIPs|podIP|podIPs))$"
)
RESOURCE_FIELDS = r"^(limits|requests)\.(cpu|memory|ephemeral-storage|hugepages-[-a-zA-Z0-9]+)$"


class ObjectFieldSelector(ApiModel):
    """A field of the pod."""

    field_path: str = Field(
        max_length=256,
        description="metadata.name, metadata.namespace, metadata.uid, metadata.labels['<key>'], "
        "metadata.annotations['<key>'], spec.nodeName, spec.serviceAccountName, status.hostIP(s), status.podIP(s).",
    )
    api_version: Optional[Literal["v1"]] = Field(default=None, description="v1.")
    cel_rules: ClassVar = (
        Rule(
            "field-path",
            f"self.fieldPath.matches({cel_str(FIELD_PATHS)})",
            "fieldPath must be one of metadata.name, metadata.namespace, metadata.uid, "
            "metadata.labels['<key>'], metadata.annotations['<key>'], spec.nodeName, "
            "spec.serviceAccountName, status.hostIP, status.hostIPs, status.podIP, status.podIPs",
            "fieldPath",
            lambda f: matches(FIELD_PATHS, f.field_path),
        ),
    )


class ResourceFieldSelector(ApiModel):
    """A resource limit or request of a container."""

    cel_rules: ClassVar = (
        Rule(
            "resource-field",
            f"self.resource.matches({cel_str(RESOURCE_FIELDS)})",
            "resource must be limits.<name> or requests.<name> of cpu, memory, ephemeral-storage or hugepages-<size>, "
            "such as limits.memory",
            "resource",
            lambda f: matches(RESOURCE_FIELDS, f.resource),
        ),
    )
    resource: str = Field(max_length=64, description="limits.cpu, requests.memory, ...")
    container_name: Optional[str] = Field(default=None, max_length=63, description="The container (default: this one).")
    divisor: Optional[Quantity] = Field(default=None, description="Unit of the value, e.g. 1Mi.")


class EnvVarSource(ApiModel):
    """Where a variable's value comes from: exactly one source."""

    cel_rules: ClassVar = (
        Rule(
            "one-env-source",
            "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), "
            "has(self.resourceFieldRef)].filter(x, x).size() == 1",
            "valueFrom must name exactly one source: secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef",
            "",
            lambda s: sum(x is not None for x in (s.secret_key_ref, s.config_map_key_ref, s.field_ref, s.resource_field_ref)) == 1,
        ),
    )
    secret_key_ref: Optional[KeySelector] = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: Optional[KeySelector] = Field(default=None, description="A key of a ConfigMap.")
    field_ref: Optional[ObjectFieldSelector] = Field(default=None, description="A field of the pod.")
    resource_field_ref: Optional[ResourceFieldSelector] = Field(default=None, description="A resource of the container.")


# ---- network policy peers ---------------------------------------------------------------------


def _cidr_ok(value: str) -> bool:
    """As Go's netip.ParsePrefix reads it (the CEL library's isCIDR): address/bits, no zone."""
    if "/" not in value or "%" in value or not matches(r"/[0-9]{1,3}$", value):
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _except_ok(block: Any) -> bool:
    if not _cidr_ok(block.cidr):
        return True  # reported by the cidr rule
    outer = ipaddress.ip_network(block.cidr, strict=False)
    for item in block.except_ or ():
        if not _cidr_ok(item):
            return False
        inner = ipaddress.ip_network(item, strict=False)
        if inner.version != outer.version or not inner.subnet_of(outer) or inner.prefixlen <= outer.prefixlen:
            return False
    return True


CIDR_MESSAGE = "must be a CIDR such as 10.0.0.0/8 or fd00::/8"
Cidr = checked(str, string_rule("cidr", "isCIDR(self)", _cidr_ok, CIDR_MESSAGE), min_length=1, max_length=64)


class IPBlock(ApiModel):
    """Addresses by CIDR, with exceptions inside it."""

    cel_rules: ClassVar = (
        Rule(
            "except-inside-cidr",
            "!has(self.except) || !isCIDR(self.cidr) || self.except.all(e, isCIDR(e) && "
            "cidr(self.cidr).containsCIDR(e) && cidr(e).prefixLength() > cidr(self.cidr).prefixLength())",
            "every except entry must be a CIDR strictly inside cidr, such as 10.1.0.0/16 inside 10.0.0.0/8",
            "except",
            _except_ok,
        ),
    )
    cidr: Cidr = Field(description="Addresses allowed, e.g. 10.0.0.0/8.")
    except_: Optional[list[Cidr]] = Field(default=None, alias="except", max_length=16, description="Addresses inside cidr left out.")


class NetworkPolicyPeer(ApiModel):
    """Who may connect: pods, namespaces, or addresses (as in a NetworkPolicy)."""

    cel_rules: ClassVar = (
        Rule(
            "peer-one-kind",
            "has(self.ipBlock) ? !(has(self.podSelector) || has(self.namespaceSelector)) : "
            "(has(self.podSelector) || has(self.namespaceSelector))",
            "a peer is either an ipBlock or a podSelector and/or namespaceSelector, and names at least one of them",
            "",
            lambda p: (p.pod_selector is None and p.namespace_selector is None) if p.ip_block is not None
            else (p.pod_selector is not None or p.namespace_selector is not None),
        ),
    )
    pod_selector: Optional[LabelSelector] = Field(default=None, description="Pods (of the namespaces selected).")
    namespace_selector: Optional[LabelSelector] = Field(default=None, description="Namespaces.")
    ip_block: Optional[IPBlock] = Field(default=None, description="Addresses.")

