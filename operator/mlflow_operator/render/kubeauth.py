"""What `spec.auth.type: Kubernetes` adds to the server's pods and the cluster.

The server checks each client's ServiceAccount token with a TokenReview and each request with a
SubjectAccessReview (see the image's `mlflow_entrypoint.kubeauth`). For that its own
ServiceAccount needs `create` on those two review kinds, which the built-in ClusterRole
`system:auth-delegator` grants and nothing more; reviews are cluster-scoped, so the grant is a
ClusterRoleBinding. The server's pod gets a token of its own, mounted into the server container only
(the init containers never talk to Kubernetes).
"""
from __future__ import annotations

from typing import Any

from ..api import TrackingServer
from ..constants import (
    OWNER_NAMESPACE_LABEL,
    OWNER_UID_ANNOTATION,
    SERVICE_ACCOUNT_DIR,
    TOKEN_REVIEWER_CLUSTER_ROLE,
)
from . import naming

API_ACCESS_VOLUME = "kube-api-access"
# The kubelet refreshes a projected token at 80% of its lifetime; the client library re-reads it.
TOKEN_EXPIRATION_SECONDS = 3607


def audience(ts: TrackingServer) -> str:
    """The audience client tokens must carry: one per TrackingServer, so a token for one server
    (or for the API server itself) is refused by every other."""
    configured = ts.spec.auth.kubernetes.audience if ts.spec.auth.kubernetes else None
    return configured or f"mlflow-operator.dev/{ts.namespace}/{ts.name}"


def review_binding_name(ts: TrackingServer) -> str:
    return f"mlflow-operator:{ts.namespace}:{naming.tracking_name(ts)}"


def review_binding(ts: TrackingServer) -> dict[str, Any]:
    """Grants the server's ServiceAccount the reviews. Cluster-scoped, so no owner reference (see
    constants.OWNER_UID_ANNOTATION): the operator deletes it when the spec drops Kubernetes auth or
    the TrackingServer goes."""
    meta = naming.object_meta(ts, review_binding_name(ts), naming.TRACKING, owned=False,
                              annotations={OWNER_UID_ANNOTATION: ts.metadata.uid or ""})
    del meta["namespace"]
    meta["labels"] = dict(sorted({**meta["labels"], OWNER_NAMESPACE_LABEL: ts.namespace}.items()))
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": TOKEN_REVIEWER_CLUSTER_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": naming.tracking_name(ts), "namespace": ts.namespace}],
    }


def api_access_volume() -> dict[str, Any]:
    """The same files as the kubelet's automounted token, for one container only."""
    return {
        "name": API_ACCESS_VOLUME,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_EXPIRATION_SECONDS}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ],
        },
    }


def api_access_mount() -> dict[str, Any]:
    return {"name": API_ACCESS_VOLUME, "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}
