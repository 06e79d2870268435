"""Secrets the operator generates: the Flask secret key and the basic-auth admin's password, and
the OIDC sidecar's cookie secret.

They hold random values, so they are created once and never regenerated: the reconciler asks
`required_generated_secrets` which ones this spec needs, calls `fresh_secret_values` ONLY for a
Secret that does not exist in the cluster yet, and passes those values in
`RenderContext.generated_secrets`. Rendering itself never draws random numbers (same input, same
bytes).
"""
from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from ..api import TrackingServer
from ..api import derived as d
from ..constants import RETENTION_ANNOTATION
from . import naming
from .context import RenderContext

FLASK_SECRET_KEY = "secret-key"
ADMIN_USERNAME_KEY = "username"
ADMIN_PASSWORD_KEY = "password"
ADMIN_USERNAME = "admin"
OIDC_COOKIE_SECRET_KEY = "cookie-secret"
OIDC_INTERNAL_PASSWORD_KEY = "password"
OIDC_HTPASSWD_KEY = "htpasswd"
OIDC_INTERNAL_USER = "mlflow-tracking-pods"


@dataclass(frozen=True)
class GeneratedSecret:
    name: str
    keys: tuple[str, ...]
    purpose: str


def required_generated_secrets(ts: TrackingServer) -> list[GeneratedSecret]:
    if d.oidc_auth(ts.spec):
        # The sign-in sidecar's cookie secret: every replica decrypts every other's sessions.
        required = [GeneratedSecret(naming.oidc_secret_name(ts), (OIDC_COOKIE_SECRET_KEY,), "oidc-cookie-secret")]
        if ts.spec.artifacts.mode == "Split":
            # the tracking pods' credential at the artifacts pods' sidecar (render/oidc.py)
            required.append(GeneratedSecret(naming.oidc_internal_secret_name(ts), (OIDC_INTERNAL_PASSWORD_KEY, OIDC_HTPASSWD_KEY),
                                            "oidc-internal"))
        return required
    if not d.basic_auth(ts.spec):
        return []
    # Every replica (and the artifacts pods) must sign sessions with the same key.
    required = [GeneratedSecret(naming.flask_secret_name(ts), (FLASK_SECRET_KEY,), "flask-secret-key")]
    if ts.spec.auth.admin_secret_ref is None:
        required.append(
            GeneratedSecret(naming.admin_secret_name(ts), (ADMIN_USERNAME_KEY, ADMIN_PASSWORD_KEY), "admin")
        )
    return required


def fresh_secret_values(secret: GeneratedSecret) -> dict[str, str]:
    """New random values for a generated Secret. Call once, when the Secret does not exist."""
    if secret.purpose == "oidc-internal":
        password = secrets.token_urlsafe(32)
        digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
        # oauth2-proxy's htpasswd file takes {SHA} (and bcrypt) lines; the password is random, so
        # the unsalted hash gives nothing to a dictionary
        return {OIDC_INTERNAL_PASSWORD_KEY: password, OIDC_HTPASSWD_KEY: f"{OIDC_INTERNAL_USER}:{{SHA}}{digest}\n"}
    if secret.purpose == "oidc-cookie-secret":
        # 32 random bytes, base64url with padding: oauth2-proxy decodes it to an AES-256 key.
        return {OIDC_COOKIE_SECRET_KEY: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}
    if secret.purpose == "admin":
        return {ADMIN_USERNAME_KEY: ADMIN_USERNAME, ADMIN_PASSWORD_KEY: secrets.token_urlsafe(24)}  # 32 chars
    return {FLASK_SECRET_KEY: secrets.token_urlsafe(32)}  # 43 chars


def generated_secret_manifests(ts: TrackingServer, context: RenderContext) -> list[dict[str, Any]]:
    manifests = []
    for secret in required_generated_secrets(ts):
        values = context.generated_secrets.get(secret.name)
        if values is None:
            continue  # exists already (or rendered without a cluster): never overwrite it
        missing = set(secret.keys) - set(values)
        if missing:
            raise ValueError(f"generated Secret {secret.name} lacks {sorted(missing)}")
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": naming.object_meta(
                    ts,
                    secret.name,
                    naming.TRACKING,
                    # Retained by default: a re-created TrackingServer finds its admin password
                    # and key again, matching the auth database it may also have kept.
                    owned=ts.spec.retention_policy == "Delete",
                    annotations={RETENTION_ANNOTATION: ts.spec.retention_policy},
                ),
                "type": "Opaque",
                "immutable": True,
                "data": {k: base64.b64encode(values[k].encode()).decode() for k in secret.keys},
            }
        )
    return manifests
