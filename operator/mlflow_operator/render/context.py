"""What the renderer needs from the cluster, passed in so that rendering stays pure."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class RenderContext:
    """Inputs the renderer cannot compute itself.

    generated_secrets: values for the Secrets the operator generates (see
        `required_generated_secrets`), keyed by Secret name. The reconciler passes values only
        for a Secret that does not exist yet (fresh ones from `fresh_secret_values`); the
        renderer emits a Secret manifest only for the names given here, so an existing Secret is
        never overwritten.
    secret_hashes: `secret_data_hash` of the data of each Secret the pods reference (user
        Secrets and generated ones), keyed by Secret name. They feed the pods' config-hash
        annotation, so changing a Secret's data rolls the pods. A missing entry counts as
        unknown (the CLI renders without a cluster).
    """

    generated_secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    secret_hashes: Mapping[str, str] = field(default_factory=dict)


def secret_data_hash(data: Mapping[str, str | bytes]) -> str:
    """A digest of a Secret's decoded data (values as bytes or text), independent of key order."""
    digest = hashlib.sha256()
    for key in sorted(data):
        value = data[key]
        raw = value.encode() if isinstance(value, str) else value
        digest.update(key.encode() + b"\0" + hashlib.sha256(raw).digest())
    return digest.hexdigest()
