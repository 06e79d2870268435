"""Pinned versions of everything the local control plane builds. One place to bump them.

The etcd version is not pinned here: it is read from k8s.io/kubernetes' own go.mod
(go.etcd.io/etcd/server/v3), so etcd always matches the Kubernetes release.
"""

KUBERNETES = "v1.35.4"  # k8s.io/kubernetes; staging modules k8s.io/* are v0.<minor>.<patch>
KWOK = "v0.8.0"  # sigs.k8s.io/kwok
HELM = "v3.22.0"  # helm.sh/helm/v3
GATEWAY_API = "v1.6.3"  # sigs.k8s.io/gateway-api (CRDs from config/crd); v1.7.0 needs Go 1.27
PROMETHEUS_OPERATOR = "v0.85.0"  # github.com/prometheus-operator/prometheus-operator (ServiceMonitor CRD)

# The real node (localcluster.start(node=True)): kubelet and kube-proxy come from KUBERNETES;
# containerd, runc and the CNI plugins are Debian's (hack/system-deps).
COREDNS = "v1.15.0"  # github.com/coredns/coredns (cluster DNS, run as a pod)
LOCAL_PATH_PROVISIONER = "v0.0.30"  # github.com/rancher/local-path-provisioner (dynamic PVs, run as a pod)
PAUSE = "3.10.1"  # TAG of build/pause in k8s.io/kubernetes KUBERNETES (the sandbox image, built from pause.c)
TRAEFIK = "v3.7.13"  # github.com/traefik/traefik/v3 (opt-in ingress controller and Gateway API implementation)


def staging_version(kubernetes: str = KUBERNETES) -> str:
    """k8s.io/kubernetes v1.35.4 -> staging modules (k8s.io/api, ...) v0.35.4."""
    major, minor, patch = kubernetes.lstrip("v").split(".")
    return f"v0.{minor}.{patch}"
