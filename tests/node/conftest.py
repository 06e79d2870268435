"""The real node tier: both images built by `make images`, imported into the node's containerd, the
operator installed by `helm install` of its chart, TrackingServers served by real pods.

- ``node_images`` (session): the built images, imported into the node's containerd.
- ``installed_operator`` (session): `helm install` of charts/mlflow-operator with those images
  (pullPolicy Never) in its own namespace with the `restricted` Pod Security level enforced, the
  chart's RBAC and the in-cluster ServiceAccount configuration: nothing of the test process's. The
  server image is also named as a mirror's copy (MIRROR) and the chart's `serverImage.repository`
  points there, as an air-gapped cluster's would: every TrackingServer without `spec.image` runs
  the image the chart's value names (`--default-image`). The Gateway API and ServiceMonitor CRDs are
  installed first, as on a cluster with a Gateway implementation and Prometheus.
- ``real`` (function): the helper of one test: a namespace (restricted too), examples moved into it,
  PostgreSQL, MariaDB, MinIO, Azurite and fake-gcs-server reachable from pods (tests/node/reach.py), `kubectl port-forward` to a
  Service, the stock client outside the cluster, and what to show when a wait fails.
"""
from __future__ import annotations

import base64
import json
import re
import subprocess
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.operator_fixtures import CHART, EXAMPLES, OPERATOR_NAMESPACE, RELEASE, get_json, wait_for, wait_for_conditions

from .reach import ServiceForPods

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
}
CLIENT_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true", "GIT_PYTHON_REFRESH": "quiet", "LANG": "C.UTF-8",
    # as hack/testservices' client: MLflow 3.18 answers 500 for a proxied key missing in S3 and the
    # client retries `runs:/<id>/model` on the run's path before the logged model; no sleeping.
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "300",
}


def restricted_namespace(cluster, name: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {**RESTRICTED, "mlflow-operator.dev/test": "true"}},
    }))


# The server image under a mirror registry's name (`ctr images tag`: nothing is pulled).
MIRROR = "localhost/mirror/mlflow-server"


@pytest.fixture(scope="session")
def node_images(built_images, node_cluster):
    if getattr(node_cluster, "node", None) is not None:
        for image in built_images.values():
            node_cluster.load_image(image.archive)
        server = built_images["server"].ref
        node_cluster.node.tag_image(server, f"{MIRROR}:{server.rpartition(':')[2]}")
    return built_images


def load_test_image(node_cluster, request, name: str, what: str):
    """An image only the tests use (hack/images `name`: built like the others and cached; `make
    images-all` builds it before pytest), imported into the node's containerd. A failed build fails
    the test, naming `what`."""
    from images.build import ImageBuildError, ensure_images

    capture = request.config.pluginmanager.getplugin("capturemanager")
    try:
        with capture.global_and_fixture_disabled():
            image = ensure_images((name,))[name]
    except ImageBuildError as exc:
        pytest.fail(f"{what} could not be built: {exc}", pytrace=False)
    node_cluster.load_image(image.archive)
    return image


@dataclass
class InstalledOperator:
    cluster: Any
    namespace: str
    release: str
    default_image: str = ""

    def pods(self) -> list[dict]:
        return get_json(self.cluster, "pods", "-n", self.namespace, "-l",
                        "app.kubernetes.io/name=mlflow-operator")["items"]

    def logs(self, lines: int = 40) -> str:
        return self.cluster.kubectl("logs", "-n", self.namespace, f"deployment/{self.release}",
                                    f"--tail={lines}", check=False).stdout


@pytest.fixture(scope="session")
def installed_operator(node_cluster, node_images) -> Iterator[InstalledOperator]:
    repository, _, tag = node_images["operator"].ref.rpartition(":")
    node_cluster.install_gateway_api_crds()
    node_cluster.install_servicemonitor_crd()
    restricted_namespace(node_cluster, OPERATOR_NAMESPACE)
    # A repository alone: the chart's pinned MLflow version is the tag (the built image's).
    proc = node_cluster.helm(
        "install", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE,
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Never", "--set", f"serverImage.repository={MIRROR}",
        "--wait", "--timeout", "5m", check=False, timeout=400,
    )
    op = InstalledOperator(node_cluster, OPERATOR_NAMESPACE, RELEASE,
                           default_image=f"{MIRROR}:{node_images['server'].ref.rpartition(':')[2]}")
    if proc.returncode != 0:
        pods = node_cluster.kubectl("get", "pods,events", "-n", OPERATOR_NAMESPACE, "-o", "wide", check=False).stdout
        pytest.fail(f"helm install failed: {proc.stderr}\n{pods}\n{op.logs()}", pytrace=False)
    try:
        yield op
    finally:
        node_cluster.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait", check=False)
        node_cluster.kubectl("delete", "namespace", OPERATOR_NAMESPACE, "--wait=false", check=False)


class PortForward:
    """`kubectl port-forward svc/<name> :<port>`: the local port kubectl picked, for a client outside."""

    def __init__(self, cluster, namespace: str, target: str, port: int):
        self.proc = subprocess.Popen(
            [str(cluster.kubectl_path()), "--kubeconfig", str(cluster.kubeconfig), "port-forward", "-n", namespace,
             target, f":{port}", "--address", "127.0.0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not m:
            self.stop()
            raise AssertionError(f"kubectl port-forward {target}: {line}{self.proc.stderr.read()}")
        self.local_port = int(m.group(1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Real:
    cluster: Any
    namespace: str
    operator: InstalledOperator
    request: Any
    client_venv: Any
    workdir: Path
    _cleanup: list = field(default_factory=list)
    _services: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def postgres(self):
        """hack/testservices' PostgreSQL, started on first use (the quickstart needs none)."""
        return self.request.getfixturevalue("postgres")

    @property
    def s3(self):
        return self.request.getfixturevalue("s3")

    @property
    def mysql(self):
        return self.request.getfixturevalue("mysql")

    @property
    def azurite(self):
        return self.request.getfixturevalue("azurite")

    @property
    def gcs(self):
        return self.request.getfixturevalue("gcs")

    def timed(self, what: str, fn):
        t0 = time.monotonic()
        try:
            return fn()
        finally:
            self.timings[what] = round(time.monotonic() - t0, 1)

    def kubectl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.cluster.kubectl(*args, **kw)

    # -- objects
    def example(self, filename: str) -> dict[str, Any]:
        docs = [d for d in yaml.safe_load_all((EXAMPLES / filename).read_text()) if d]
        ts = next(d for d in docs if d.get("kind") == "TrackingServer")
        ts["metadata"]["namespace"] = self.namespace
        return ts

    def apply(self, obj: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def secret(self, name: str, data: dict[str, str], type_: str = "Opaque") -> None:
        self.apply({"apiVersion": "v1", "kind": "Secret", "type": type_,
                    "metadata": {"name": name, "namespace": self.namespace},
                    "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})

    def secret_value(self, name: str, key: str) -> str:
        return base64.b64decode(get_json(self.cluster, "secret", name, "-n", self.namespace)["data"][key]).decode()

    # -- services on the host, for pods
    def expose(self, name: str, host_port: int, port: int) -> ServiceForPods:
        """A service on this machine's loopback port as <name>.<namespace>.svc:<port> for pods."""
        if name not in self._services:
            svc = ServiceForPods(self.cluster, self.namespace, name, host_port, port).start()
            self._cleanup.append(svc.stop)
            self._services[name] = svc
        return self._services[name]

    def database(self, name: str, server=None) -> str:
        """A fresh PostgreSQL database, as a URI pods reach (postgres.<namespace>.svc:5432): on the
        session's PostgreSQL, or on `server` (a test's own, e.g. one it stops)."""
        pg = server or self.postgres
        self.expose("postgres", pg.port, 5432)
        uri = pg.create_database(f"node_{name}_{uuid.uuid4().hex[:8]}")
        return uri.replace(f"@{pg.host}:{pg.port}/", f"@postgres.{self.namespace}.svc:5432/")

    def mysql_database(self, name: str) -> str:
        """A fresh MariaDB database, as the `mysql+pymysql://` URI pods reach (mysql.<namespace>.svc:3306)."""
        self.expose("mysql", self.mysql.port, 3306)
        uri = self.mysql.create_database(f"node_{name}_{uuid.uuid4().hex[:8]}")
        uri = uri.replace(f"@{self.mysql.host}:{self.mysql.port}/", f"@mysql.{self.namespace}.svc:3306/")
        return uri.replace("mysql://", "mysql+pymysql://", 1)

    def azure_connection_string(self) -> str:
        """Azurite as pods reach it (azurite.<namespace>.svc:10000), for AZURE_STORAGE_CONNECTION_STRING."""
        self.expose("azurite", self.azurite.port, 10000)
        return self.azurite.connection_string(f"azurite.{self.namespace}.svc", 10000)

    def s3_endpoint(self) -> str:
        """MinIO as pods reach it (minio.<namespace>.svc:9000)."""
        self.expose("minio", int(self.s3.endpoint.rsplit(":", 1)[1]), 9000)
        return f"http://minio.{self.namespace}.svc:9000"

    def gcs_endpoint(self) -> str:
        """fake-gcs-server as pods reach it (fake-gcs.<namespace>.svc:4443), for STORAGE_EMULATOR_HOST."""
        self.expose("fake-gcs", self.gcs.port, 4443)
        return f"http://fake-gcs.{self.namespace}.svc:4443"

    def bucket(self, name: str) -> str:
        client = self.s3.client()
        try:
            client.create_bucket(Bucket=name)
        except (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
            pass
        return name

    def s3_keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def s3_secret(self, name: str) -> None:
        self.secret(name, {"access-key-id": self.s3.access_key, "secret-access-key": self.s3.secret_key})

    # -- waiting
    def explain(self) -> str:
        objects = self.kubectl("get", "pods,jobs,deployments,pvc", "-n", self.namespace, "-o", "wide", check=False).stdout
        events = self.kubectl("get", "events", "-n", self.namespace, "--sort-by=.lastTimestamp", check=False).stdout
        logs = []
        for pod in (get_json(self.cluster, "pods", "-n", self.namespace) or {"items": []})["items"]:
            name = pod["metadata"]["name"]
            logs.append(f"--- {name}\n" + self.kubectl("logs", "-n", self.namespace, name, "--all-containers",
                                                      "--tail=15", check=False).stdout)
        return (f"objects:\n{objects}\nevents (last 25):\n" + "\n".join(events.splitlines()[-25:])
                + "\npod logs:\n" + "\n".join(logs) + f"\noperator log:\n{self.operator.logs(30)}")

    def wait_ready(self, name: str, timeout: float = 600, **more: str) -> dict[str, Any]:
        try:
            return wait_for_conditions(self.cluster, self.namespace, name, timeout=timeout, Ready="True", **more)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.explain()}") from None

    def wait_conditions(self, name: str, timeout: float = 180, **wanted: str) -> dict[str, Any]:
        try:
            return wait_for_conditions(self.cluster, self.namespace, name, timeout=timeout, **wanted)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.explain()}") from None

    def get(self, name: str) -> dict[str, Any]:
        return get_json(self.cluster, "trackingserver", name, "-n", self.namespace) or {}

    def pods(self, selector: str) -> list[dict[str, Any]]:
        return get_json(self.cluster, "pods", "-n", self.namespace, "-l", selector)["items"]

    def ready_pods(self, instance: str, component: str = "tracking") -> list[dict[str, Any]]:
        out = []
        for pod in self.pods(f"app.kubernetes.io/instance={instance},app.kubernetes.io/component={component}"):
            if pod["metadata"].get("deletionTimestamp"):
                continue
            if any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or []):
                out.append(pod)
        return out

    def wait_pods(self, instance: str, count: int, component: str = "tracking", timeout: float = 300) -> list[dict]:
        return wait_for(f"{count} Ready {component} pods of {instance}",
                        lambda: (lambda pods: pods if len(pods) == count else None)(self.ready_pods(instance, component)),
                        timeout=timeout, interval=1, explain=self.explain)

    # -- clients outside the cluster
    def port_forward(self, service: str, port: int = 5000) -> PortForward:
        pf = PortForward(self.cluster, self.namespace, f"svc/{service}", port)
        self._cleanup.append(pf.stop)
        return pf

    def port_forward_to_pod(self, pod: str, port: int = 5000) -> PortForward:
        """To one replica, where a Service would pick any."""
        pf = PortForward(self.cluster, self.namespace, f"pod/{pod}", port)
        self._cleanup.append(pf.stop)
        return pf

    def client(self, script: str, env: dict[str, str] | None = None, timeout: float = 600,
               check: bool = True) -> subprocess.CompletedProcess:
        """Python in the client virtualenv on the host: outside the cluster, as a user's laptop."""
        home = self.workdir / "client-home"
        home.mkdir(exist_ok=True)
        full = {"PATH": f"{self.client_venv.path / 'bin'}:/usr/bin:/bin", "HOME": str(home), **CLIENT_ENV, **(env or {})}
        res = subprocess.run([str(self.client_venv.python), "-c", textwrap.dedent(script)], env=full, cwd=home,
                             capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            pytest.fail(f"client script failed (exit {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}\n"
                        f"{self.explain()}", pytrace=False)
        return res

    def close(self) -> None:
        for fn in reversed(self._cleanup):
            fn()


@pytest.fixture
def real(node_cluster, installed_operator, client_venv, tmp_path, request) -> Iterator[Real]:
    name = "n-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:5]
    restricted_namespace(node_cluster, name)
    helper = Real(node_cluster, name, installed_operator, request, client_venv, tmp_path)
    try:
        yield helper
    finally:
        helper.close()
        print(f"{request.node.nodeid} phases: {json.dumps(helper.timings)}")
        # Waited for (bounded): a namespace still terminating holds its pods' CPU requests, which on
        # a 2-core node leaves the next test's pods Pending.
        node_cluster.kubectl("delete", "namespace", name, "--wait=true", "--timeout=180s", check=False, timeout=200)
