"""The TrackingServer status: what the operator observed, never what it remembers doing.

Everything here can be rebuilt by looking at the children (Deployments, Job, Services) and
the server itself, following the Kubernetes API conventions: a list of conditions keyed by type,
each with a one-word reason, a human message and the generation it describes.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import ApiModel

# Condition types. `Ready` is the summary a person or `kubectl wait` looks at.
READY = "Ready"
AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
BACKEND_REACHABLE = "BackendReachable"
ARTIFACT_STORE_REACHABLE = "ArtifactStoreReachable"
MIGRATIONS_APPLIED = "MigrationsApplied"
CONDITION_TYPES = (
    READY,
    AVAILABLE,
    PROGRESSING,
    DEGRADED,
    BACKEND_REACHABLE,
    ARTIFACT_STORE_REACHABLE,
    MIGRATIONS_APPLIED,
)


class Condition(ApiModel):
    """One aspect of the TrackingServer's observed state."""

    type: str = Field(
        max_length=64,
        description="Ready, Available, Progressing, Degraded, BackendReachable, "
        "ArtifactStoreReachable or MigrationsApplied.",
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=128,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="One CamelCase word for machines, e.g. MigrationFailed.",
    )
    message: str = Field(default="", max_length=32768, description="What a person should know.")
    last_transition_time: str = Field(
        description="When status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this condition describes."
    )


class TrackingServerStatus(ApiModel):
    """Observed state, written by the operator through the status subresource."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The latest metadata.generation the operator acted on."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=16,
        description="Observations, one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    class_name: str | None = Field(
        default=None,
        description="The TrackingServerClass the server runs with: spec.className, or the default "
        "class it got at its first reconcile (kept when another class becomes the default).",
    )
    database: str | None = Field(
        default=None,
        description="What the class provisioned: database, role and server (never a password).",
    )
    artifacts: str | None = Field(
        default=None,
        description="What the class provisioned for artifacts: MinIO user, policy and prefix (never a key).",
    )
    url: str | None = Field(
        default=None, description="Where clients reach the server (MLFLOW_TRACKING_URI)."
    )
    mlflow_version: str | None = Field(
        default=None,
        description="The MLflow version that serves now: what the ready tracking pods of the current "
        "pod template report from their image (their check init container reads it from the installed "
        "MLflow); the image tag only for pods that report none. Lags spec.image while a migration runs.",
    )
    mode: str | None = Field(
        default=None, description="Artifact mode in effect: Proxied, Direct, Split or ArtifactsOnly."
    )
    replicas: int | None = Field(default=None, ge=0, description="Tracking pods that exist.")
    ready_replicas: int | None = Field(default=None, ge=0, description="Tracking pods that are ready.")
    selector: str | None = Field(
        default=None, description="Label selector of the tracking pods (for `kubectl scale` and HPAs)."
    )
