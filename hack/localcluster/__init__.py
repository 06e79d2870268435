"""A real Kubernetes control plane on 127.0.0.1, built from source, for tests, demos and CI.

What runs (all at pinned versions, see ``versions.py``; built once into
``${XDG_CACHE_HOME:-~/.cache}/mlflow-operator/bin/<kubernetes version>/`` by ``build.py``):
etcd, kube-apiserver (authorization Node,RBAC; admission incl. PodSecurity, NamespaceLifecycle,
ServiceAccount, NodeRestriction, ResourceQuota, OwnerReferencesPermissionEnforcement, webhooks,
ValidatingAdmissionPolicy; an audit log of service accounts' requests, see ``audit.py``),
kube-controller-manager (all default controllers: garbage collector, deployment, replicaset,
job, namespace, serviceaccount, serviceaccount-token, ...; one ServiceAccount per controller),
kube-scheduler, and kwok, which plays the kubelet of fake nodes. Every process listens on
127.0.0.1 only, runs in its own session, logs to ``<temp dir>/logs/<name>.log``, and is stopped
(process group, TERM then KILL) by ``Cluster.stop()``, at interpreter exit, on SIGTERM/SIGHUP,
and by the kernel if the starting process dies.

Fake nodes and pods (kwok)
--------------------------
kwok manages only nodes annotated ``kwok.x-k8s.io/node: fake`` (``start()`` creates
``kwok-node-0``; labels ``type=kwok``, ``kubernetes.io/os=linux``; no taints). Other nodes (a
real kubelet registered later) are left alone. Pods scheduled on a fake node:

- become Running with every container running and Ready (Deployments become available);
- if owned by a Job, then Succeed (containers terminated, exit code 0, reason Completed);
- annotated ``mlflow-operator.dev/test-fail: "true"``: go Running, then Failed (containers
  terminated, exit code 1, reason Error). Put it on a Job's pod template to make the Job fail;
- annotated ``mlflow-operator.dev/test-not-ready: "true"``: go Running but never Ready;
- when deleted, disappear at once (no grace period).

Python API
----------
``start() -> Cluster``; ``Cluster.kubeconfig`` (admin), ``.bin_dir`` (kubectl, helm, ...),
``.server``, ``.api_client()``, ``.kubectl(*args, input=None, check=True)``, ``.helm(...)``,
``.install_gateway_api_crds()``, ``.install_servicemonitor_crd()``,
``.kubeconfig_for_service_account(namespace, name)`` (TokenRequest), ``.admin_credentials()``,
``.client_certificate(cn, orgs)``, ``.logs(component)``, ``.kwok_nodes()``, ``.stop()``,
``.audit_log`` / ``.audit_requests(user, since, until)`` (requests of ServiceAccounts outside
kube-system: verb, resource, namespace, name, code; ``audit.count_by_verb`` counts them).
``Cluster.existing(kubeconfig)`` wraps a cluster we did not start (kind, a real one).

Command line: ``hack/cluster up|down|status|build`` (see ``__main__.py``).
pytest: the plugin ``localcluster.pytest_plugin`` (fixtures ``cluster``, ``namespace``; env var
``MLFLOW_OPERATOR_TEST_KUBECONFIG`` to use an existing cluster).
"""
from __future__ import annotations

from .build import BuildError
from .cluster import Cluster, ClusterError, KubectlError, start
from .kwok_stages import FAIL_ANNOTATION, FAKE_NODE_ANNOTATION, HOLD_ANNOTATION, NOT_READY_ANNOTATION
from .versions import KUBERNETES

__all__ = [
    "BuildError",
    "Cluster",
    "ClusterError",
    "KubectlError",
    "start",
    "existing",
    "FAIL_ANNOTATION",
    "FAKE_NODE_ANNOTATION",
    "HOLD_ANNOTATION",
    "NOT_READY_ANNOTATION",
    "KUBERNETES",
]


def existing(kubeconfig) -> Cluster:
    """A Cluster for a cluster we did not start (never stopped by us)."""
    return Cluster.existing(kubeconfig)
