"""The pod runner for the local demo: `python -m tests.workload.podrunner` (from the repository root, as root).

Runs against the cluster that `hack/cluster up` started (its recorded state), with the pinned server
image's virtualenv, plus the NGINX ingress controller stand-in, until Ctrl-C. Pods land on its node when
they select and tolerate it (podTemplate of a TrackingServer):

    nodeSelector: {mlflow-operator.dev/runner: "true"}
    tolerations: [{key: mlflow-operator.dev/runner, operator: Equal, value: "true", effect: NoSchedule}]

Service names and Ingress hosts resolve only inside pods and clients given the runner's hosts file:
the ingress answers on 127.80.<slot>.1 (printed at start), e.g. `curl --resolve host:443:127.80.0.1 ...`.
"""
from __future__ import annotations

import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def main() -> int:
    sys.path[:0] = [str(REPO / "hack"), str(REPO)]
    from kubernetes import config as k8s_config
    from localcluster.__main__ import _load

    from testservices.venvs import server_venv
    from tests.workload.conftest import IMAGE_REPOSITORY, pinned_mlflow

    from . import ImageStore, IngressController, Kube, PodRunner, Slot

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(message)s")
    cluster = _load()
    if cluster is None:
        print("no cluster recorded: run `hack/cluster up` first", file=sys.stderr)
        return 2

    def kube_for(cn: str, groups: tuple[str, ...] = ()) -> Kube:
        path = cluster.kubeconfig_for_certificate(cluster.client_certificate(cn, groups))
        return Kube(k8s_config.new_client_from_config(config_file=str(path)))

    images = ImageStore()
    images.add(f"{IMAGE_REPOSITORY}:{pinned_mlflow()}", server_venv().path)
    slot = Slot()
    workdir = Path(tempfile.mkdtemp(prefix="podrunner-"))
    runner = PodRunner(kube_for("system:node:runner-0", ("system:nodes",)), kube_for("system:kube-proxy"),
                       Kube(cluster.api_client()), images, workdir / "runner", slot=slot.number).start()
    ingress = IngressController(Kube(cluster.api_client()), workdir / "ingress", address=slot.ingress_address,
                                pod_cidr=runner.network.cidr).start()
    print(f"pod runner: node runner-0, pods 10.200.{slot.number}.0/24, ingress on {slot.ingress_address}:80/443, "
          f"logs in {workdir}; Ctrl-C stops", flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        ingress.stop()
        runner.stop()
        slot.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
