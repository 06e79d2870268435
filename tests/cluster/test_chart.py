"""The operator's Helm chart, rendered by the real helm and applied to the real API server."""
from __future__ import annotations

import json

import yaml

from tests.operator_fixtures import (
    CHART,
    CRDS,
    OPERATOR_NAMESPACE,
    apply_object,
    install_chart_rbac,
    install_crds,
    load_example,
    start_operator,
    stop_operator,
    wait_for_conditions,
)


def test_chart_ships_the_generated_crd():
    generated = (CRDS / "trackingservers.mlflow-operator.dev.yaml").read_text()
    shipped = (CHART / "crds" / "trackingservers.mlflow-operator.dev.yaml").read_text()
    assert shipped == generated, "charts/mlflow-operator/crds/ is stale: run `make crd`"


def test_chart_lints_and_its_operator_pod_passes_restricted(cluster, namespace):
    lint = cluster.helm("lint", str(CHART), "--strict")
    assert "0 chart(s) failed" in lint.stdout, lint.stdout
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
    rendered = cluster.helm("template", "ops", str(CHART), "--namespace", namespace).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--all-namespaces" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    # The server, with PodSecurity admission on, dry-runs the operator's own Deployment's pod.
    pod_spec = {**deployment["spec"]["template"]["spec"], "serviceAccountName": "default"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator-pod", "namespace": namespace}, "spec": pod_spec}
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "violate" not in proc.stderr, proc.stderr


def test_namespaced_install_works_with_rolebindings_and_peering(cluster, namespace, volume_provisioner, tmp_path):
    """watchNamespaces: RoleBindings only in the listed namespaces, KopfPeering there, and the operator
    started with the chart's own arguments reconciles a TrackingServer."""
    install_crds(cluster)
    install_crds(cluster, CHART / "crds")  # Kopf's peering CRDs
    release = f"mlflow-operator-{namespace[-6:]}"
    rendered = install_chart_rbac(cluster, [f"watchNamespaces={{{namespace}}}"], release=release,
                                  templates=("serviceaccount.yaml", "rbac.yaml", "peering.yaml"))
    kinds = [(d["kind"], d["metadata"].get("namespace")) for d in yaml.safe_load_all(rendered) if d]
    assert ("RoleBinding", namespace) in kinds and ("KopfPeering", namespace) in kinds
    assert ("ClusterRoleBinding", None) in kinds  # only the cluster-wide discovery rules
    bindings = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ClusterRoleBinding"]
    assert [b["roleRef"]["name"] for b in bindings] == [f"{release}-cluster"]

    op = start_operator(cluster, tmp_path, ("--namespace", namespace, "--peering", "mlflow-operator"), service_account=release)
    try:
        ts = load_example("02-sqlite.yaml", namespace)
        apply_object(cluster, ts)
        wait_for_conditions(cluster, namespace, ts["metadata"]["name"], timeout=120, op=op, Ready="True")
        op.assert_alive()
        assert "Forbidden" not in op.log_path.read_text(), op.logs()
    finally:
        stop_operator(op)
        cluster.kubectl("delete", "clusterrolebinding,clusterrole", "-l", f"app.kubernetes.io/instance={release}", check=False)
        cluster.kubectl("delete", "serviceaccount", release, "-n", OPERATOR_NAMESPACE, check=False)
