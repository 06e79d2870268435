"""The OIDC admin group's right to delete (``MLFLOW_OPERATOR_AUTH=oidc`` with
``MLFLOW_OPERATOR_OIDC_ADMIN_GROUP``).

With OIDC the server listens on the pod's loopback behind the oauth2-proxy sidecar, which signs
users in and lets through only the allowed groups. The proxy passes who the user is in
``X-Forwarded-User`` / ``X-Forwarded-Groups`` (comma-separated), and strips those headers from
what a client sends, so behind it they are the proxy's word. This layer refuses a request that
deletes (the ``delete`` verb of ``kubeauth.verb_for``: DELETE and ``delete...`` endpoints) with 403
unless the user is in the admin group. Reads and writes are the proxy's decision alone.
"""
from __future__ import annotations

import logging

from .kubeauth import EXEMPT_PATHS, _answer, verb_for

log = logging.getLogger("uvicorn.error")


def _header(headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


class AdminGroupGate:
    def __init__(self, app, admin_group: str):
        self.app, self.admin_group = app, admin_group

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            return await self.app(scope, receive, send)
        if verb_for(scope["method"], scope["path"]) != "delete":
            return await self.app(scope, receive, send)
        headers = scope.get("headers", ())
        groups = {g.strip() for g in (_header(headers, b"x-forwarded-groups") or "").split(",")}
        if self.admin_group in groups:
            return await self.app(scope, receive, send)
        user = _header(headers, b"x-forwarded-user") or "(no user)"
        log.info("forbidden: %s is not in the admin group %s (%s %s)", user, self.admin_group,
                 scope["method"], scope["path"])
        return await _answer(send, 403, f"only members of {self.admin_group} may delete")
