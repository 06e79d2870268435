"""The whole TrackingServer object, and loading one with errors that name the field."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ..constants import API_VERSION, KIND
from .base import ApiModel
from .cel import RULES_ERROR, refuse
from .rules import NAME_RULE, SPEC_RULES
from .spec import TrackingServerSpec
from .status import TrackingServerStatus


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads; the rest (managedFields, ...) passes through."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class TrackingServer(ApiModel):
    api_version: Literal["mlflow-operator.dev/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["TrackingServer"] = KIND
    metadata: ObjectMeta
    spec: TrackingServerSpec = Field(default_factory=TrackingServerSpec)
    status: TrackingServerStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "TrackingServer":
        # The same rules the API server enforces through the CRD's CEL (see rules.py).
        # With a class, they hold for the spec the class and this one make (render/classes.py).
        classed = self.spec.class_name is not None
        violations = [("spec." + rule.field, rule.message) for rule in SPEC_RULES if not classed and not rule.check(self.spec)]
        if not NAME_RULE.check(self.metadata.name):
            violations.insert(0, (NAME_RULE.field, NAME_RULE.message))
        if violations:
            raise refuse(violations)
        return self


@dataclass(frozen=True)
class FieldError:
    path: str  # e.g. spec.artifacts.destination
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidTrackingServer(ValueError):
    """A TrackingServer the API server would refuse; `errors` name each bad field."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


# Fields whose values are maps: the next part of a location is a key, written [key] as the API
# server writes it (spec.resources.requests[cpu]).
MAP_FIELDS = {"requests", "limits", "labels", "annotations", "nodeSelector", "matchLabels"}


def _path(loc: tuple[Any, ...]) -> str:
    path = ""
    previous: Any = None
    for part in loc:
        if part in ("int", "str") and previous is not None:
            continue  # the member of an int-or-string union pydantic tried: not a field
        if isinstance(part, int) or previous in MAP_FIELDS:
            path += f"[{part}]"
        elif part == "[key]":
            continue
        else:
            path += ("." if path else "") + str(part)
        previous = part if not isinstance(part, int) and previous not in MAP_FIELDS else None
    return path or "(root)"


def _quoted(value: Any) -> str:
    return '"' + value + '"' if isinstance(value, str) else str(value)


def _api_server_wording(err: dict[str, Any]) -> str:
    """pydantic's message for a schema error, in the API server's words for the same check, so
    that `render` and `kubectl apply` refuse a spec with the same sentence."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return "Required value"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"Unsupported value: {_quoted(value)}: supported values: " + ", ".join(f'"{a}"' for a in allowed)
    if kind == "greater_than_equal":
        return f"should be greater than or equal to {ctx['ge']}"
    if kind == "less_than_equal":
        return f"should be less than or equal to {ctx['le']}"
    if kind == "string_too_long":
        return f"Too long: may not be more than {ctx['max_length']} bytes"
    if kind == "string_too_short":
        return f"should be at least {ctx['min_length']} chars long"
    if kind == "too_short":
        return f"should have at least {ctx['min_length']} items"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} items"
    for python_type, api_type in (("int", "integer"), ("string", "string"), ("bool", "boolean"),
                                  ("dict", "object"), ("list", "array"), ("model", "object")):
        if kind in (f"{python_type}_type", f"{python_type}_attributes_type"):
            return f"must be of type {api_type}"
    return err["msg"]


def _field_errors(exc: ValidationError) -> list[FieldError]:
    return field_errors_of(exc.errors(include_url=False))


def field_errors_of(details: list[dict[str, Any]]) -> list[FieldError]:
    """pydantic's error details as FieldErrors, in the API server's words."""
    errors: list[FieldError] = []
    for err in details:
        if err["type"] == RULES_ERROR:
            # A rule reports its own field, relative to where it sits (the object's location).
            base = _path(err["loc"]) if err["loc"] else ""
            for field, message in err["ctx"]["violations"]:
                path = ".".join(p for p in (base, field) if p) or "(root)"
                errors.append(FieldError(path, message))
        else:
            path = _path(err["loc"])
            message = f'unknown field "{path}"' if err["type"] == "extra_forbidden" else _api_server_wording(err)
            error = FieldError(path, message)
            if error not in errors:  # an int-or-string value reports once, not per union member
                errors.append(error)
    return errors


def load_trackingserver(obj: Any) -> TrackingServer:
    """Validate a TrackingServer (a dict as read from YAML or the API, or a model)."""
    if isinstance(obj, TrackingServer):
        return obj
    if not isinstance(obj, dict):
        raise InvalidTrackingServer([FieldError("(root)", "a TrackingServer must be a mapping")])
    try:
        return TrackingServer.model_validate(obj)
    except ValidationError as exc:
        raise InvalidTrackingServer(_field_errors(exc)) from None
