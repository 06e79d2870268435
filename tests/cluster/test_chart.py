"""The operator's Helm chart, rendered by the real helm and applied to the real API server."""
from __future__ import annotations

import json
import subprocess

import yaml

from tests.operator_fixtures import (
    CHART,
    CRDS,
    OPERATOR_NAMESPACE,
    apply_object,
    get_json,
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
    # Secrets: the watched namespace's, and by name in the operator's own (the classes' admin
    # Secrets); in no other namespace, and never listed in the operator's own.
    account = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{release}"
    for verb, where, allowed in (("get", OPERATOR_NAMESPACE, "yes"), ("list", OPERATOR_NAMESPACE, "no"),
                                 ("get", namespace, "yes"), ("get", "default", "no")):
        answer = cluster.kubectl("auth", "can-i", verb, "secrets", "-n", where, "--as", account, check=False).stdout.strip()
        assert answer == allowed, (verb, where, answer)

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
        cluster.kubectl("delete", "rolebinding,role", "-n", OPERATOR_NAMESPACE, "-l", f"app.kubernetes.io/instance={release}", check=False)
        cluster.kubectl("delete", "serviceaccount", release, "-n", OPERATOR_NAMESPACE, check=False)


# ---- values are checked by the chart's schema, at install ------------------------------------------

def test_values_schema_refuses_typos_before_anything_is_installed(cluster):
    lint = cluster.helm("lint", str(CHART), "--strict", "--set", "watchNamespaces={a,b}",
                        "--set", "serverImage.repository=mirror.corp/mlflow-server", "--set", "clusterDomain=corp.internal")
    assert "0 chart(s) failed" in lint.stdout, lint.stdout + lint.stderr
    for bad, words in [
        ("logLevel=verbose", "/logLevel"),  # the issue's own example: an enum
        ("logLevl=debug", "logLevl"),  # a key nobody reads
        ("health.port=80800", "/health/port"),
        ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
        ("serverImage.repository=mirror.corp/mlflow-server:3.18.0", "/serverImage/repository"),  # the tag has its value
    ]:
        proc = cluster.helm("template", "ops", str(CHART), "--set", bad, check=False)
        assert proc.returncode != 0, f"{bad} was accepted"
        assert "values don't meet the specifications of the schema" in proc.stderr and words in proc.stderr, proc.stderr
        installed = cluster.helm("install", "typo", str(CHART), "-n", OPERATOR_NAMESPACE, "--create-namespace",
                                 "--set", bad, check=False)
        assert installed.returncode != 0 and "schema" in installed.stderr, installed.stderr
        assert cluster.helm("status", "typo", "-n", OPERATOR_NAMESPACE, check=False).returncode != 0, "a release was left"


def test_operator_settings_reach_the_operators_arguments(cluster):
    def args(*sets: str) -> list[str]:
        flags = [f for s in sets for f in ("--set", s)]
        rendered = cluster.helm("template", "ops", str(CHART), *flags).stdout
        deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
        return deployment["spec"]["template"]["spec"]["containers"][0]["args"]

    default = args()
    assert not any(a.startswith(("--default-image", "--cluster-domain")) for a in default)  # the operator's own
    assert "--health-port=8470" in default and "--metrics-port=8471" in default
    assert "--default-image=mirror.corp/mlflow/mlflow-server" in args("serverImage.repository=mirror.corp/mlflow/mlflow-server")
    assert "--default-image=mirror.corp/m:3.18.0-1" in args("serverImage.repository=mirror.corp/m", "serverImage.tag=3.18.0-1")
    assert "--cluster-domain=corp.internal" in args("clusterDomain=corp.internal")


def test_watching_namespaces_that_do_not_exist_yet_installs_and_uninstall_keeps_them(cluster, namespace):
    missing = f"{namespace[:50].rstrip('-')}-new"
    release = f"ns-{namespace[-6:]}"
    try:
        install = cluster.helm("install", release, str(CHART), "-n", namespace,
                               "--set", f"watchNamespaces={{{namespace},{missing}}}", check=False)
        assert install.returncode == 0, install.stderr
        assert "STATUS: deployed" in install.stdout, install.stdout
        created = get_json(cluster, "namespace", missing)
        assert created["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        binding = f"{release}-mlflow-operator"  # the chart's fullname
        assert get_json(cluster, "rolebinding", binding, "-n", missing) is not None
        assert get_json(cluster, "rolebinding", binding, "-n", namespace) is not None
        # an upgrade keeps it in the release; an uninstall leaves it (and its TrackingServers' data)
        upgrade = cluster.helm("upgrade", release, str(CHART), "-n", namespace,
                               "--set", f"watchNamespaces={{{namespace},{missing}}}", check=False)
        assert upgrade.returncode == 0, upgrade.stderr
        cluster.helm("uninstall", release, "-n", namespace)
        assert get_json(cluster, "namespace", missing) is not None, "uninstall deleted a watched namespace"
        refused = cluster.helm("install", release + "-b", str(CHART), "-n", namespace, "--set", "createWatchNamespaces=false",
                               "--set", f"watchNamespaces={{{namespace[:50].rstrip('-')}-absent}}", check=False)
        assert refused.returncode != 0 and "not found" in refused.stderr, refused.stderr
    finally:
        cluster.helm("uninstall", release, "-n", namespace, check=False)
        cluster.helm("uninstall", release + "-b", "-n", namespace, check=False)
        cluster.kubectl("delete", "namespace", missing, "--wait=false", check=False)
        cluster.kubectl("delete", "clusterrolebinding,clusterrole", "-l", f"app.kubernetes.io/instance={release}", check=False)


def test_the_notes_commands_work_as_printed(cluster, namespace, tmp_path):
    """NOTES.txt is what a person copies after `helm install`: its apply command must create a
    TrackingServer (no namespace of an example file in the way, no links)."""
    # server dry-run: the chart looks up which watched namespaces exist (a client dry-run cannot)
    notes = cluster.helm("install", "notes", str(CHART), "-n", OPERATOR_NAMESPACE, "--dry-run=server",
                         "--set", f"watchNamespaces={{{namespace}}}").stdout.split("NOTES:", 1)[1]
    assert "http" not in notes.replace("http://localhost:5000", ""), notes
    lines = notes.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("echo '"))
    command = lines[start].strip().rstrip("\\") + lines[start + 1].strip()
    assert f"kubectl apply -n {namespace} -f -" in command
    kubectl_dir = cluster.kubectl_path().parent
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={"PATH": f"{kubectl_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
                                             "KUBECONFIG": str(cluster.kubeconfig)})
    assert proc.returncode == 0, proc.stderr
    assert get_json(cluster, "trackingserver", "mlflow", "-n", namespace)["spec"] is not None
    assert "kubectl apply --server-side --force-conflicts -f mlflow-operator/crds/" in notes
