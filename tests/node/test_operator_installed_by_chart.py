"""The operator as users run it: its image, installed by `helm install` of its chart, on a real node."""
from __future__ import annotations

import json

from tests.operator_fixtures import get_json, wait_for

from .conftest import MIRROR, RESTRICTED


def test_helm_installed_operator_runs_restricted_with_passing_probes_and_json_logs(installed_operator):
    op = installed_operator
    cluster = op.cluster
    namespace = get_json(cluster, "namespace", op.namespace)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == RESTRICTED[
        "pod-security.kubernetes.io/enforce"]
    pods = op.pods()
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    pod = pods[0]
    status = pod["status"]["containerStatuses"][0]
    # Ready means the chart's readiness probe (Kopf's /healthz) passed in the real container.
    assert status["ready"] is True and status["restartCount"] == 0, status
    assert status["imageID"], status
    container = pod["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "Never"
    assert {"livenessProbe", "readinessProbe"} <= set(container)
    # the chart's serverImage.repository became the operator's default server image (the pinned tag)
    assert f"--default-image={MIRROR}" in container["args"], container["args"]
    # The chart's own ServiceAccount, its token mounted: the in-cluster configuration.
    assert pod["spec"]["serviceAccountName"] == op.release
    assert not any(e["name"] == "KUBECONFIG" for e in container.get("env", []))

    lines = [l for l in op.logs(200).splitlines() if l.strip()]
    assert lines, "the operator logged nothing"
    records = [json.loads(l) for l in lines]  # every line is JSON
    assert all("message" in r for r in records), records[:3]

    inside = cluster.kubectl("exec", "-n", op.namespace, pod["metadata"]["name"], "--",
                             "python3", "-c", "import os; print(os.getuid(), os.getgid());"
                             "print([l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1]);"
                             "import pathlib; print(pathlib.Path('/var/run/secrets/kubernetes.io/serviceaccount/token').is_file())").stdout.split()
    assert inside == ["10001", "10001", "0" * 16, "True"], inside


def test_operator_peering_is_the_charts(installed_operator):
    """The chart turns Kopf peering on: the operator's pod is registered in the cluster-wide peering."""
    cluster = installed_operator.cluster
    assert get_json(cluster, "clusterkopfpeering", "mlflow-operator") is not None, "the chart's peering is missing"
    args = installed_operator.pods()[0]["spec"]["containers"][0]["args"]
    assert "--peering=mlflow-operator" in args, args
    # Kopf writes its identity into the peering object's status while it runs.
    wait_for("the operator in the peering's status",
             lambda: (get_json(cluster, "clusterkopfpeering", "mlflow-operator") or {}).get("status"), timeout=90)
