"""The TrackingServer API (mlflow-operator.dev/v1alpha1): pydantic models for spec and status,
the cross-field rules, and loading with field-named errors."""
from .rules import NAME_RULE, RULES_BY_NAME, SPEC_RULES, Rule
from .spec import TrackingServerSpec
from .status import Condition, TrackingServerStatus
from .trackingserver import FieldError, InvalidTrackingServer, TrackingServer, load_trackingserver
from .trackingserverclass import TrackingServerClass, TrackingServerClassSpec, load_trackingserverclass

__all__ = [
    "Condition",
    "FieldError",
    "InvalidTrackingServer",
    "NAME_RULE",
    "RULES_BY_NAME",
    "Rule",
    "SPEC_RULES",
    "TrackingServer",
    "TrackingServerClass",
    "TrackingServerClassSpec",
    "TrackingServerSpec",
    "TrackingServerStatus",
    "load_trackingserver",
    "load_trackingserverclass",
]
