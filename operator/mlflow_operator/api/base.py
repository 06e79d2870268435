"""Base class and small reference types shared by the spec and status models.

Every model field carries a description: the CRD generator copies it into the schema, so it is
what `kubectl explain trackingserver.spec...` prints.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from .cel import checked, dns_label_rule, dns_subdomain_rule, matches, model_violations, refuse, string_rule

SECRET_KEY = r"^[-._a-zA-Z0-9]+$"


def _schema_rules(schema: dict[str, Any], model: type) -> None:
    """A model's own `cel_rules` become its schema's x-kubernetes-validations."""
    rules = model.__dict__.get("cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.validation() for r in rules]


# Names of Kubernetes objects (DNS-1123 subdomains) and Secret keys, as the API server checks them.
ObjectName = checked(str, dns_subdomain_rule("Kubernetes object name", "team-db"), min_length=1, max_length=253)
Dns1123Label = checked(str, dns_label_rule("DNS label", "team-a"), min_length=1, max_length=63)
SecretKey = checked(
    str,
    string_rule(
        "secret-key",
        f"self.matches('{SECRET_KEY}')",
        lambda v: matches(SECRET_KEY, v),
        "must be a Secret key: letters, digits, '-', '_' and '.', such as uri or password",
    ),
    min_length=1,
    max_length=253,
)


class ApiModel(BaseModel):
    """Fields are camelCase in YAML (Kubernetes API conventions), snake_case in Python.

    Unknown fields are errors, never ignored: a typo must not silently turn into a default.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # Types as the API server checks them: "3" is not an integer, "true" not a boolean.
        strict=True,
        json_schema_extra=_schema_rules,
    )

    @model_validator(mode="after")
    def _cel_rules(self) -> "ApiModel":
        # The same rules the CRD gives the API server for this object (see cel.py).
        found = model_violations(self)
        if found:
            raise refuse(found)
        return self

    def dump(self) -> dict[str, Any]:
        """The object as it appears in YAML: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def section(model: type[BaseModel], description: str) -> Any:
    """A sub-object that is always present, defaulted to `{}` so that its own fields' defaults
    apply. The CRD gets `default: {}` for it too, so the API server defaults it the same way."""
    return Field(default_factory=model, description=description, json_schema_extra={"default": {}})


class SecretKeySelector(ApiModel):
    """A key of a Secret in the TrackingServer's namespace."""

    name: ObjectName = Field(description="Name of the Secret, in the TrackingServer's namespace.")
    key: SecretKey = Field(description="Key in the Secret whose value is used.")


class SecretValue(ApiModel):
    """A value read from a Secret (never written in the TrackingServer itself)."""

    secret_key_ref: SecretKeySelector = Field(
        description="The Secret key holding the value. The pods read it as an environment "
        "variable (secretKeyRef); changing the Secret's data rolls the pods."
    )


class LocalObjectReference(ApiModel):
    """A reference to an object by name in the TrackingServer's namespace."""

    name: ObjectName = Field(description="Name of the object.")
