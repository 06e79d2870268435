"""Base class and small reference types shared by the spec and status models.

Every model field carries a description: the CRD generator copies it into the schema, so it is
what `kubectl explain trackingserver.spec...` prints.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Kubernetes object names (DNS-1123 subdomain) and Secret keys.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"


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
    )

    def dump(self) -> dict[str, Any]:
        """The object as it appears in YAML: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def section(model: type[BaseModel], description: str) -> Any:
    """A sub-object that is always present, defaulted to `{}` so that its own fields' defaults
    apply. The CRD gets `default: {}` for it too, so the API server defaults it the same way."""
    return Field(default_factory=model, description=description, json_schema_extra={"default": {}})


class SecretKeySelector(ApiModel):
    """A key of a Secret in the TrackingServer's namespace."""

    name: str = Field(
        description="Name of the Secret, in the TrackingServer's namespace.",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )
    key: str = Field(
        description="Key in the Secret whose value is used.",
        min_length=1,
        max_length=253,
        pattern=SECRET_KEY,
    )


class SecretValue(ApiModel):
    """A value read from a Secret (never written in the TrackingServer itself)."""

    secret_key_ref: SecretKeySelector = Field(
        description="The Secret key holding the value. The pods read it as an environment "
        "variable (secretKeyRef); changing the Secret's data rolls the pods."
    )


class LocalObjectReference(ApiModel):
    """A reference to an object by name in the TrackingServer's namespace."""

    name: str = Field(
        description="Name of the object.", min_length=1, max_length=253, pattern=DNS_SUBDOMAIN
    )
