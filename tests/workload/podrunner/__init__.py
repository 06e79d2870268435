"""The pod runner: a kubelet, kube-proxy, cluster DNS and NGINX ingress controller stand-in for tests.

There is no container runtime on the machines this project is tested on, so the workload tier runs
the pods that the operator's Deployments and Jobs create as host processes, exactly as their pod specs
say, on a real Node of the real control plane (hack/localcluster):

- kubelet.py: registers the Node (with node credentials, heartbeats through a Lease), runs the pods
  bound to it (init containers, containers, restarts, probes, exit codes, deletion) and reports their
  status; see its docstring for what is and is not emulated.
- resolve.py: the pod spec resolved as the kubelet resolves it (env, envFrom, secretKeyRef, fieldRef,
  $(VAR) expansion, command/args against the image's ENTRYPOINT/CMD, volumes and mounts, workingDir).
- images.py: image references -> the server virtualenv built for that MLflow version; the image's
  config is read from server-image/Dockerfile. Unknown images are refused (ErrImagePull).
- nsexec.py: starts one container process in its own mount and UTS namespaces (volumes bind-mounted
  at their mountPaths, the pod's /etc/hosts, read-only root filesystem, host name).
- network.py: pod IPs (10.200.<slot>.0/24, served on their loopback images 127.200.<slot>.x), Services
  (a TCP proxy per ClusterIP:port, from the real EndpointSlices) and Service DNS names (the pod's hosts
  file).
- slots.py: a machine-wide slot per test session (a file lock), so that two sessions at once use
  different pod IPs, Service addresses and ingress address.
- ingress.py: a real NGINX configured from the cluster's Ingress objects.

It is a test stand-in, not a product feature: it runs only images it knows and refuses the rest.
tests/workload/conftest.py starts it for the e2e tests; `python -m tests.workload.podrunner` runs it
against `hack/cluster up`'s cluster for a local demo.
"""
from .images import ImageStore, image_config
from .ingress import IngressController
from .kube import Kube
from .kubelet import RUNNER_LABEL, PodRunner
from .network import POD_NETWORK, loopback_of
from .slots import Slot

__all__ = ["ImageStore", "IngressController", "Kube", "POD_NETWORK", "PodRunner", "RUNNER_LABEL", "Slot",
           "image_config", "loopback_of"]
