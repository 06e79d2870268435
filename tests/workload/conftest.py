"""Fixtures of the end-to-end tier (tests/workload/test_e2e_*.py): from a TrackingServer to a working
MLflow endpoint on the real control plane.

Shared for the session (2 cores: one of each): the local control plane (`cluster`), the operator
(`operator_process`, with the chart's RBAC), the volume provisioner, PostgreSQL (`postgres`), MinIO
(`s3`), the pod runner (`pod_runner`: a real Node whose pods run as processes, see podrunner/), the
NGINX ingress controller stand-in (`ingress_nginx`) and a test CA (`test_ca`).

Per test: `e2e` (an `E2E` helper on a fresh namespace) applies an examples/ manifest with kubectl,
adapted only where the test must point at its own services: the runner node (podTemplate.nodeSelector
and tolerations), Secrets holding the test PostgreSQL's URIs and MinIO's keys, the S3 endpoint, and
TLS Secrets from the test CA.

Clients. `e2e.client(script, env)` runs Python in the stock-mlflow client virtualenv as an in-cluster
client would run: in its own mount namespace whose /etc/hosts maps the Ingress hosts to the ingress
controller's address and the Service names to the Services (podrunner/network.py). So
MLFLOW_TRACKING_URI is the TrackingServer's status.url, verbatim (https://<ingress host> or
http://<svc>.<ns>.svc:5000); TLS is verified against the test CA (MLFLOW_TRACKING_SERVER_CERT_PATH).
Nothing is patched inside the client.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from localcluster.certs import CertificateAuthority
from testservices import REPO
from testservices.postgres import Postgres
from testservices.venvs import Venv
from tests.operator_fixtures import EXAMPLES, condition, get_json, wait_for, wait_for_conditions

from . import podrunner
from .podrunner import IngressController, ImageStore, Kube, PodRunner, RUNNER_LABEL, Slot

NSEXEC = str(Path(podrunner.__file__).with_name("nsexec.py"))

IMAGE_REPOSITORY = "ghcr.io/mlflow-operator/mlflow-server"
ARTIFACTS_DIR = REPO / "test-artifacts" / "e2e"


def pinned_mlflow() -> str:
    from mlflow_operator.constants import MLFLOW_VERSION

    return MLFLOW_VERSION


# ---- PostgreSQL that can go down and come back ---------------------------------------------------------

class StoppablePostgres:
    """Stops a running testservices Postgres (fast shutdown: clients disconnected, data kept) and starts it
    again with exactly the command line it had (read from /proc), on the same port and data directory."""

    def __init__(self, pg: Postgres):
        self.pg = pg
        self.argv = Path(f"/proc/{pg.proc.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")

    def stop(self) -> None:
        os.killpg(self.pg.proc.pid, signal.SIGINT)
        self.pg.proc.wait(60)

    def start(self) -> None:
        from testservices._util import wait_port
        from testservices.postgres import _demote

        log = open(self.pg.log, "ab")
        self.pg.proc = subprocess.Popen([a.decode() for a in self.argv], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, **_demote())
        log.close()
        wait_port(self.pg.port, 60, self.pg.proc, "postgres (restarted)", self.pg.log)
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg2.connect(**self.pg.connect_kwargs("postgres"), connect_timeout=3).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)


# ---- session fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def test_ca(tmp_path_factory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("test-ca"), name="mlflow-operator e2e test CA")


def _kube_for(cluster, common_name: str, groups: tuple[str, ...] = ()) -> Kube:
    from kubernetes import config as k8s_config

    kubeconfig = cluster.kubeconfig_for_certificate(cluster.client_certificate(common_name, groups))
    return Kube(k8s_config.new_client_from_config(config_file=str(kubeconfig)))


@pytest.fixture(scope="session")
def runner_slot():
    """This session's addresses on the machine (podrunner/slots.py): concurrent sessions do not collide."""
    slot = Slot()
    yield slot
    slot.release()


@pytest.fixture(scope="session")
def pod_runner(cluster, server_venv, runner_slot, tmp_path_factory):
    """A Node of the local control plane whose pods run as processes (podrunner/)."""
    if not cluster.owned:
        pytest.skip("the pod runner registers a Node of the local control plane and runs its pods on this "
                    "machine; it cannot serve an existing cluster (MLFLOW_OPERATOR_TEST_KUBECONFIG)")
    images = ImageStore()
    images.add(f"{IMAGE_REPOSITORY}:{pinned_mlflow()}", server_venv.path)
    runner = PodRunner(
        node_kube=_kube_for(cluster, "system:node:runner-0", ("system:nodes",)),
        proxy_kube=_kube_for(cluster, "system:kube-proxy"),
        admin_kube=Kube(cluster.api_client()),
        images=images,
        workdir=tmp_path_factory.mktemp("podrunner"),
        slot=runner_slot.number,
    )
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture(scope="session")
def ingress_nginx(cluster, pod_runner, runner_slot, tmp_path_factory):
    controller = IngressController(Kube(cluster.api_client()), tmp_path_factory.mktemp("ingress-nginx"),
                                   address=runner_slot.ingress_address, pod_cidr=pod_runner.network.cidr)
    try:
        controller.start()
    except Exception as exc:  # noqa: BLE001 - fail with the reason, never skip
        controller.stop()
        pytest.fail(f"the NGINX ingress controller stand-in could not start: {exc}", pytrace=False)
    try:
        yield controller
    finally:
        controller.stop()


# ---- the per-test helper ----------------------------------------------------------------------------

@dataclass
class E2E:
    cluster: Any
    namespace: str
    runner: PodRunner
    ingress: IngressController
    operator: Any
    postgres: Postgres
    s3: Any
    client_venv: Venv
    ca: CertificateAuthority
    workdir: Path
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, what: str, fn: Callable[[], Any]) -> Any:
        """fn(), its duration recorded (written to test-artifacts/e2e/timings.jsonl after the test)."""
        t0 = time.monotonic()
        try:
            return fn()
        finally:
            self.timings[what] = round(time.monotonic() - t0, 1)

    # -- objects
    def kubectl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.cluster.kubectl(*args, **kw)

    def example(self, filename: str) -> dict[str, Any]:
        """The example's TrackingServer in this test's namespace, scheduled on the runner node."""
        docs = [d for d in yaml.safe_load_all((EXAMPLES / filename).read_text()) if d]
        ts = next(d for d in docs if d.get("kind") == "TrackingServer")
        ts["metadata"]["namespace"] = self.namespace
        template = ts.setdefault("spec", {}).setdefault("podTemplate", {})
        template["nodeSelector"] = {**(template.get("nodeSelector") or {}), **self.runner.node_selector}
        template["tolerations"] = (template.get("tolerations") or []) + self.runner.tolerations
        return ts

    def apply(self, obj: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def patch(self, name: str, patch: dict[str, Any] | list, kind: str = "trackingserver") -> None:
        ptype = "json" if isinstance(patch, list) else "merge"
        self.kubectl("patch", kind, name, "-n", self.namespace, f"--type={ptype}", "-p", json.dumps(patch))

    def secret(self, name: str, data: dict[str, str], type_: str = "Opaque") -> None:
        self.apply({"apiVersion": "v1", "kind": "Secret", "type": type_,
                    "metadata": {"name": name, "namespace": self.namespace},
                    "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})

    def secret_value(self, name: str, key: str) -> str:
        return base64.b64decode(get_json(self.cluster, "secret", name, "-n", self.namespace)["data"][key]).decode()

    def tls_secret(self, name: str, hosts: list[str]) -> None:
        pair = self.ca.issue(f"{self.namespace}-{name}", hosts[0], server_sans=tuple(f"DNS:{h}" for h in hosts),
                             client=False)
        self.secret(name, {"tls.crt": pair.cert.read_text(), "tls.key": pair.key.read_text()}, "kubernetes.io/tls")

    def database(self, name: str) -> str:
        """A fresh PostgreSQL database (empty: the operator's migration Job creates the schema)."""
        return self.postgres.create_database(f"e2e_{name}_{uuid.uuid4().hex[:8]}")

    def bucket(self, name: str) -> str:
        client = self.s3.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return name

    def s3_keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def s3_secret(self, name: str, access_key_key: str = "access-key-id", secret_key_key: str = "secret-access-key") -> None:
        self.secret(name, {access_key_key: self.s3.access_key, secret_key_key: self.s3.secret_key})

    # -- waiting
    def get(self, name: str) -> dict[str, Any]:
        return get_json(self.cluster, "trackingserver", name, "-n", self.namespace) or {}

    def explain(self) -> str:
        pods = self.kubectl("get", "pods,jobs,deployments", "-n", self.namespace, "-o", "wide", check=False).stdout
        events = self.kubectl("get", "events", "-n", self.namespace, "--sort-by=.lastTimestamp", check=False).stdout
        return (f"pods:\n{pods}\nevents (last 25):\n" + "\n".join(events.splitlines()[-25:])
                + f"\npod logs:\n{self.runner.logs(self.namespace, lines=25)}\noperator log:\n{self.operator.logs(30)}")

    def wait_ready(self, name: str, timeout: float = 420, **more: str) -> dict[str, Any]:
        """Ready=True (and `more`) for the current generation, then the route answers: the ingress
        controller and the Service proxy follow EndpointSlices a moment after the pods become ready."""
        try:
            live = wait_for_conditions(self.cluster, self.namespace, name, timeout=timeout, op=None,
                                       Ready="True", **more)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.explain()}") from None
        url = live["status"]["url"]
        wait_for(f"GET {url}/health through the route", lambda: self.route_answers(url), timeout=60, interval=0.5,
                 explain=self.explain)
        return live

    def route_answers(self, url: str) -> bool:
        """GET <url>/health the way an in-cluster client resolves it (Ingress host or Service name)."""
        import socket
        import ssl
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        host = parts.hostname
        if host in self.ingress.hosts:
            address = self.ingress.address
        else:
            name, namespace = host.split(".")[:2]
            svc = get_json(self.cluster, "service", name, "-n", namespace) or {}
            address = self.runner.network.service_image((svc.get("spec") or {}).get("clusterIP"))
            if address is None:
                return False
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            sock = socket.create_connection((address, port), timeout=10)
            if parts.scheme == "https":
                sock = ssl.create_default_context(cafile=str(self.ca.cert)).wrap_socket(sock, server_hostname=host)
            with sock:
                sock.sendall(f"GET /health HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
                return b" 200 " in sock.makefile("rb").readline()
        except OSError:
            return False

    def wait_conditions(self, name: str, timeout: float = 180, **wanted: str) -> dict[str, Any]:
        try:
            return wait_for_conditions(self.cluster, self.namespace, name, timeout=timeout, op=None, **wanted)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.explain()}") from None

    def pods(self, selector: str) -> list[dict[str, Any]]:
        return get_json(self.cluster, "pods", "-n", self.namespace, "-l", selector)["items"]

    def ready_pods(self, instance: str, component: str = "tracking") -> list[dict[str, Any]]:
        out = []
        for pod in self.pods(f"app.kubernetes.io/instance={instance},app.kubernetes.io/component={component}"):
            if pod["metadata"].get("deletionTimestamp"):
                continue
            if any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or []):
                out.append(pod)
        return out

    def wait_pods(self, instance: str, count: int, component: str = "tracking", timeout: float = 300) -> list[dict[str, Any]]:
        """Until exactly `count` pods of the component are Ready (the TrackingServer is Ready with one)."""
        return wait_for(f"{count} Ready {component} pods of {instance}",
                        lambda: (lambda pods: pods if len(pods) == count else None)(self.ready_pods(instance, component)),
                        timeout=timeout, interval=1, explain=self.explain)

    # -- clients
    def hosts_file(self) -> Path:
        path = self.workdir / "client-hosts"
        lines = self.ingress.hosts_lines()
        path.write_text(self.runner.network.hosts_text(self.namespace, lines))
        return path

    def client(self, script: str, env: dict[str, str] | None = None, timeout: float = 600,
               check: bool = True) -> subprocess.CompletedProcess:
        """Python in the client virtualenv, in-cluster style (see the module docstring)."""
        home = self.workdir / "client-home"
        home.mkdir(exist_ok=True)
        full = {"PATH": f"{self.client_venv.path / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
                "MLFLOW_DISABLE_TELEMETRY": "true", "GIT_PYTHON_REFRESH": "quiet",
                "MLFLOW_TRACKING_SERVER_CERT_PATH": str(self.ca.cert), "REQUESTS_CA_BUNDLE": str(self.ca.cert),
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "300",
                # MLflow 3.18 answers 500 (not 404) when a proxied download misses an S3 key, and the client's
                # `runs:/<id>/model` first tries the run's own path: with the default backoff a user waits
                # ~4 minutes before the client looks up the logged model. Same retries, without sleeping
                # (as hack/testservices' client does).
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
        full.update(env or {})
        return self.in_cluster([str(self.client_venv.python), "-c", textwrap.dedent(script)], full, timeout, check,
                               what="client script")

    def in_cluster(self, argv: list[str], env: dict[str, str], timeout: float, check: bool = True,
                   what: str = "command") -> subprocess.CompletedProcess:
        spec = {"hostname": "e2e-client", "mounts": [{"source": str(self.hosts_file()), "target": "/etc/hosts",
                                                       "readOnly": True}],
                "readOnlyRootFilesystem": False, "workingDir": str(self.workdir), "argv": argv, "env": env,
                "errorFile": str(self.workdir / "client.start-error")}
        spec_file = self.workdir / f"client-{uuid.uuid4().hex[:8]}.json"
        spec_file.write_text(json.dumps(spec))
        try:
            res = subprocess.run([sys.executable, "-I", NSEXEC, str(spec_file)], capture_output=True, text=True,
                                 timeout=timeout, start_new_session=True)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{what} did not finish within {timeout:g} s:\n{(exc.stdout or '')[-3000:]}\n"
                        f"{(exc.stderr or '')[-3000:]}\n{self.explain()}", pytrace=False)
        finally:
            spec_file.unlink(missing_ok=True)
        if check and res.returncode != 0:
            pytest.fail(f"{what} failed (exit {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}\n"
                        f"{self.explain()}", pytrace=False)
        return res


@pytest.fixture
def e2e(cluster, namespace, pod_runner, ingress_nginx, operator_process, volume_provisioner, postgres, s3,
        client_venv, test_ca, tmp_path, request) -> E2E:
    operator_process.assert_alive()
    helper = E2E(cluster, namespace, pod_runner, ingress_nginx, operator_process, postgres, s3, client_venv,
                 test_ca, tmp_path)
    t0 = time.monotonic()
    before = (len(pod_runner.errors), len(pod_runner.network.errors), len(ingress_nginx.errors))
    yield helper
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(ARTIFACTS_DIR / "timings.jsonl", "a") as fh:
        fh.write(json.dumps({"test": request.node.nodeid, "seconds": round(time.monotonic() - t0, 1),
                             "phases": helper.timings, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    operator_process.assert_alive()
    assert not volume_provisioner.errors, volume_provisioner.errors
    assert not pod_runner.errors[before[0]:], f"pod runner errors: {pod_runner.errors[before[0]:]}"
    assert not pod_runner.network.errors[before[1]:], f"service proxy errors: {pod_runner.network.errors[before[1]:]}"
    assert not ingress_nginx.errors[before[2]:], f"ingress controller errors: {ingress_nginx.errors[before[2]:]}"


# ---- the tutorial ------------------------------------------------------------------------------------

# A run logged earlier is still whole: params, metrics, the model (downloaded through the server) and
# its predictions (their mean was logged as a metric by the tutorial).
RECHECK = r"""
import json, os
import numpy as np
import mlflow
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

run_id = os.environ["RUN_ID"]
run = mlflow.get_run(run_id)
assert run.data.params["tutorial"] == "remote-tracking", run.data.params
db = load_diabetes()
_, X_test, _, _ = train_test_split(db.data, db.target, random_state=0)
model = mlflow.sklearn.load_model(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model"))
assert abs(float(np.mean(model.predict(X_test))) - run.data.metrics["mean_prediction"]) < 1e-9
notes = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/notes/notes.txt")
assert open(notes).read() == "hello from the tutorial\n"
print(json.dumps({"run_id": run_id, "metrics": sorted(run.data.metrics)}))
"""


def tutorial_env(url: str, experiment: str | None = None, **extra: str) -> dict[str, str]:
    env = {"MLFLOW_TRACKING_URI": url, "EXPERIMENT": experiment or "tutorial-" + uuid.uuid4().hex[:6]}
    env.update(extra)
    return env


def last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


__all__ = ["ARTIFACTS_DIR", "E2E", "RECHECK", "StoppablePostgres", "IMAGE_REPOSITORY", "RUNNER_LABEL", "condition",
           "last_json", "pinned_mlflow", "tutorial_env", "wait_for"]
