"""kind smoke test (pytest-kind), for users with a Docker engine. Not a substitute for the local
control plane: it skips, with the reason, where `docker info` fails (no engine, as on our CI).

pytest-kind downloads kind and kubectl on first use (see its KIND_VERSION / KUBECTL_VERSION
env vars and --kind-bin / --kind-kubectl-bin options).
"""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import localcluster


def _docker_engine() -> tuple[bool, str]:
    if not shutil.which("docker"):
        return False, "no `docker` command"
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False, "`docker info` timed out"
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"`docker info` failed: {detail}"
    return True, ""


_HAVE_DOCKER, _WHY = _docker_engine()

pytestmark = [
    pytest.mark.kind,
    pytest.mark.skipif(not _HAVE_DOCKER, reason=f"kind needs a Docker engine: {_WHY}"),
]


def test_kind_cluster_serves_api_and_rbac(kind_cluster):
    c = localcluster.existing(kind_cluster.kubeconfig_path)
    assert "ok" in c.kubectl("get", "--raw", "/readyz").stdout
    nodes = json.loads(c.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert nodes, "kind cluster has no nodes"
    c.kubectl("create", "namespace", "kind-smoke")
    try:
        c.kubectl("create", "serviceaccount", "reader", "-n", "kind-smoke")
        kubeconfig = c.kubeconfig_for_service_account("kind-smoke", "reader")
        proc = c.kubectl("get", "secrets", "-n", "kind-smoke", kubeconfig=kubeconfig, check=False)
        assert proc.returncode != 0 and "Forbidden" in proc.stderr
    finally:
        c.kubectl("delete", "namespace", "kind-smoke", "--wait=false")
