"""The whole TrackingServer object, and loading one with errors that name the field."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from ..constants import API_VERSION, KIND
from .base import ApiModel
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
        violations = [("spec." + rule.field, rule.message) for rule in SPEC_RULES if not rule.check(self.spec)]
        if not NAME_RULE.check(self.metadata.name):
            violations.insert(0, (NAME_RULE.field, NAME_RULE.message))
        if violations:
            raise PydanticCustomError(
                "trackingserver_rules",
                "{summary}",
                {"summary": "; ".join(f"{f}: {m}" for f, m in violations), "violations": violations},
            )
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


def _path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path or "(root)"


def _field_errors(exc: ValidationError) -> list[FieldError]:
    errors: list[FieldError] = []
    for err in exc.errors(include_url=False):
        if err["type"] == "trackingserver_rules":
            errors.extend(FieldError(f, m) for f, m in err["ctx"]["violations"])
        elif err["type"] == "extra_forbidden":
            errors.append(FieldError(_path(err["loc"]), "unknown field"))
        else:
            errors.append(FieldError(_path(err["loc"]), err["msg"] + _got(err)))
    return errors


def _got(err: Any) -> str:
    """The bad value, when it is a scalar: "Input should be 'Proxied' or 'Direct', got 'Proxie'"."""
    value = err.get("input")
    if err["type"] == "missing" or not isinstance(value, (str, int, float, bool)):
        return ""
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return f", got {shown}"


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
