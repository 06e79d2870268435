"""What the renderer needs from the cluster, passed in so that rendering stays pure."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping

from ..constants import DEFAULT_CLUSTER_DOMAIN, DEFAULT_IMAGE


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
    default_image: the server image of a TrackingServer without spec.image (the operator's
        --default-image: a mirror's copy in an air-gapped cluster). Left out of the spec, the
        image follows the operator's setting, and so its upgrades.
    cluster_domain: the cluster's DNS domain (the operator's --cluster-domain), for the Services'
        fully qualified names among the allowed Host headers.
    """

    generated_secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    secret_hashes: Mapping[str, str] = field(default_factory=dict)
    default_image: str = DEFAULT_IMAGE
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


def secret_data_hash(data: Mapping[str, str | bytes]) -> str:
    """A digest of a Secret's decoded data (values as bytes or text), independent of key order."""
    digest = hashlib.sha256()
    for key in sorted(data):
        value = data[key]
        raw = value.encode() if isinstance(value, str) else value
        digest.update(key.encode() + b"\0" + hashlib.sha256(raw).digest())
    return digest.hexdigest()
