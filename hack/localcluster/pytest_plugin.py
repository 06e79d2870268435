"""pytest fixtures for tests against a real Kubernetes API.

Registered in tests/conftest.py (``pytest_plugins = ["localcluster.pytest_plugin"]``).

- ``cluster`` (session): a ``localcluster.Cluster``. By default the local control plane is built
  (first time only) and started once per session, and stopped at the end. If the environment
  variable ``MLFLOW_OPERATOR_TEST_KUBECONFIG`` names a kubeconfig, that existing cluster (kind,
  a real one) is used instead: nothing is built, started or stopped. When the control plane
  cannot be built or started, every test using it FAILS with the reason (it is never skipped).
- ``namespace`` (function): a fresh, uniquely named namespace (its default ServiceAccount
  already exists), deleted after the test. Labelled ``mlflow-operator.dev/test=true``.
- ``node_cluster`` (session): a second cluster with a REAL node (``start(node=True)``):
  containerd, kubelet, kube-proxy, CoreDNS, local-path-provisioner (default StorageClass
  ``local-path``); no kwok nodes. ``node_cluster.load_image(oci_archive)`` imports an image
  into its containerd. Needs root; otherwise, or when it cannot be built or started, tests
  using it FAIL with the reason. With ``MLFLOW_OPERATOR_TEST_KUBECONFIG`` set it is that
  existing cluster (its nodes are real; load_image is not available there).
- ``node_namespace`` (function): like ``namespace``, on ``node_cluster``.
- ``node_ingress`` (session): Traefik on ``node_cluster``'s node (ingress_controller.py), serving
  IngressClass ``nginx`` and the Gateway ``traefik/mlflow``; ``.port`` on 127.0.0.1 reaches it.
  Only tests that ask for it pay for its build (minutes, once) and its pod.
"""
from __future__ import annotations

import os
import re
import secrets
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import pytest

from .build import BuildError
from . import ingress_controller
from .cluster import Cluster, ClusterError, start
from .node import requirements as node_requirements

KUBECONFIG_ENV = "MLFLOW_OPERATOR_TEST_KUBECONFIG"
TEST_NAMESPACE_LABEL = "mlflow-operator.dev/test"


def pytest_report_header(config: pytest.Config) -> str:
    path = os.environ.get(KUBECONFIG_ENV)
    if path:
        return f"kubernetes: existing cluster from {KUBECONFIG_ENV}={path}"
    return "kubernetes: local control plane (hack/localcluster), started on first use"


def _uncaptured(request: pytest.FixtureRequest):
    """Let build/start progress reach the terminal live (a cold build takes many minutes)."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    return capman.global_and_fixture_disabled() if capman else nullcontext()


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    path = os.environ.get(KUBECONFIG_ENV)
    if path:
        try:
            c = Cluster.existing(path)
            c.kubectl("get", "--raw", "/readyz", timeout=30)
        except ClusterError as exc:
            pytest.fail(f"{KUBECONFIG_ENV}={path}: cluster not usable: {exc}", pytrace=False)
        try:
            yield c
        finally:
            c.stop()  # only removes our service-account kubeconfigs; the cluster keeps running
        return
    try:
        with _uncaptured(request):
            c = start()
    except (ClusterError, BuildError) as exc:
        pytest.fail(f"the local Kubernetes control plane could not be built or started: {exc}", pytrace=False)
    try:
        yield c
    finally:
        with _uncaptured(request):
            c.stop()


def _namespace_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_")).strip("-")
    suffix = secrets.token_hex(3)
    return f"t-{base[: 63 - 3 - len(suffix) - 1].strip('-')}-{suffix}"


@pytest.fixture(scope="session")
def node_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    path = os.environ.get(KUBECONFIG_ENV)
    if path:
        try:
            c = Cluster.existing(path)
            c.kubectl("get", "--raw", "/readyz", timeout=30)
        except ClusterError as exc:
            pytest.fail(f"{KUBECONFIG_ENV}={path}: cluster not usable: {exc}", pytrace=False)
        try:
            yield c
        finally:
            c.stop()
        return
    missing = node_requirements()
    if missing:
        pytest.fail("a real node cannot run here; missing: " + "; ".join(missing), pytrace=False)
    try:
        with _uncaptured(request):
            c = start(node=True)
    except (ClusterError, BuildError) as exc:
        pytest.fail(f"the local cluster with a real node could not be built or started: {exc}", pytrace=False)
    try:
        yield c
    finally:
        with _uncaptured(request):
            c.stop()


def _make_namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = _namespace_name(request)
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, f"{TEST_NAMESPACE_LABEL}=true")
    deadline = time.monotonic() + 30
    while cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode != 0:
        if time.monotonic() > deadline:
            pytest.fail(f"namespace {name}: default ServiceAccount not created within 30s", pytrace=False)
        time.sleep(0.1)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from _make_namespace(cluster, request)


@pytest.fixture
def node_namespace(node_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from _make_namespace(node_cluster, request)


@pytest.fixture(scope="session")
def cluster_kubeconfig(cluster: Cluster) -> Path:
    """The admin kubeconfig path of `cluster` (convenience)."""
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def node_ingress(node_cluster: Cluster, request: pytest.FixtureRequest) -> "ingress_controller.NodeIngress":
    if node_cluster.ingress is None:
        if getattr(node_cluster, "node", None) is None:
            pytest.fail(f"node_ingress needs the real node started here (not {KUBECONFIG_ENV})", pytrace=False)
        try:
            with _uncaptured(request):
                node_cluster.ingress = ingress_controller.install(node_cluster)
        except (ClusterError, BuildError) as exc:
            pytest.fail(f"the ingress controller could not be built or installed: {exc}", pytrace=False)
    return node_cluster.ingress
