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
