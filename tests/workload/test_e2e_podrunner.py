"""The pod runner itself: it resolves pod specs as the kubelet does, and refuses what it cannot run.

Hand-written pods and Jobs on the runner node, with our server image (its virtualenv has a Python), so
each check is a real process started from a real pod spec through the real API server and scheduler.
"""
from __future__ import annotations

import json
import textwrap

import pytest

from tests.operator_fixtures import get_json, wait_for

from .conftest import IMAGE_REPOSITORY, pinned_mlflow

pytestmark = pytest.mark.timeout(600)

PROBE_ENV = textwrap.dedent("""
    import json, os, socket, sys
    keys = ["FROM_VALUE", "FROM_SECRET", "FROM_CONFIGMAP", "PREFIX_color", "POD_NAME", "POD_NAMESPACE", "POD_IP",
            "NODE", "LABEL", "COMPOSED", "ESCAPED", "UNDEFINED", "HOME", "PATH", "HOSTNAME", "FROM_IMAGE_ONLY"]
    out = {k: os.environ.get(k) for k in keys}
    out["argv"] = sys.argv[1:]
    out["cwd"] = os.getcwd()
    out["hostname"] = socket.gethostname()
    out["secret_file"] = open("/etc/creds/token").read()
    out["tmp_writable"] = os.access("/tmp", os.W_OK)
    try:
        open("/should-not-exist", "w")
        out["root_writable"] = True
    except OSError as e:
        out["root_writable"] = e.strerror
    open("/work-dir/result.json", "w").write(json.dumps(out))
    print("RESULT " + json.dumps(out), flush=True)
""")


def image() -> str:
    return f"{IMAGE_REPOSITORY}:{pinned_mlflow()}"


def pod(e2e, name: str, containers: list[dict], volumes: list[dict] | None = None, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": e2e.namespace, "labels": {"app": name, "tier": "probe"}},
            "spec": {"nodeSelector": e2e.runner.node_selector, "tolerations": e2e.runner.tolerations,
                     "restartPolicy": "Never", "containers": containers, "volumes": volumes or [],
                     "automountServiceAccountToken": False,  # projected token volumes are not implemented
                     "terminationGracePeriodSeconds": 5, **spec}}


def pod_status(e2e, name: str) -> dict:
    return (get_json(e2e.cluster, "pod", name, "-n", e2e.namespace) or {}).get("status") or {}


def wait_phase(e2e, name: str, *phases: str, timeout: float = 120) -> dict:
    return wait_for(f"pod {name} in phase {phases}", lambda: (lambda s: s if s.get("phase") in phases else None)(
        pod_status(e2e, name)), timeout=timeout, interval=0.5, explain=e2e.explain)


def test_runner_resolves_env_args_volumes_like_the_kubelet(e2e):
    e2e.secret("probe-secret", {"password": "s3cr3t-value", "token": "file-token\n"})
    e2e.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe-config", "namespace": e2e.namespace},
               "data": {"greeting": "hello", "color": "blue"}})
    container = {
        "name": "probe", "image": image(),
        "command": ["python", "-c", PROBE_ENV],
        "args": ["$(FROM_VALUE)", "$$(FROM_VALUE)", "$(UNDEFINED_VAR)"],
        "workingDir": "/work-dir",
        "envFrom": [{"configMapRef": {"name": "probe-config"}, "prefix": "PREFIX_"}],
        "env": [
            {"name": "FROM_VALUE", "value": "plain"},
            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "probe-secret", "key": "password"}}},
            {"name": "FROM_CONFIGMAP", "valueFrom": {"configMapKeyRef": {"name": "probe-config", "key": "greeting"}}},
            {"name": "MISSING_OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": True}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
            {"name": "COMPOSED", "value": "$(FROM_CONFIGMAP)-$(PREFIX_color)@$(POD_IP):5000"},
            {"name": "ESCAPED", "value": "$$(FROM_VALUE)"},
            {"name": "UNDEFINED", "value": "$(NOT_DEFINED_ANYWHERE)"},
        ],
        "securityContext": {"readOnlyRootFilesystem": True},
        "volumeMounts": [{"name": "work", "mountPath": "/work-dir"}, {"name": "scratch", "mountPath": "/tmp"},
                         {"name": "creds", "mountPath": "/etc/creds", "readOnly": True}],
    }
    volumes = [{"name": "work", "emptyDir": {}}, {"name": "scratch", "emptyDir": {}},
               {"name": "creds", "secret": {"secretName": "probe-secret", "items": [{"key": "token", "path": "token"}]}}]
    e2e.apply(pod(e2e, "env-probe", [container], volumes, hostname="probe-host"))
    status = wait_phase(e2e, "env-probe", "Succeeded", "Failed")
    logs = e2e.runner.logs(e2e.namespace, "env-probe", lines=200)
    assert status["phase"] == "Succeeded", logs
    got = json.loads(next(line for line in logs.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    pod_ip = status["podIP"]
    assert pod_ip.startswith("10.200."), status
    assert got["argv"] == ["plain", "$(FROM_VALUE)", "$(UNDEFINED_VAR)"], got["argv"]
    assert got["FROM_SECRET"] == "s3cr3t-value" and got["FROM_CONFIGMAP"] == "hello" and got["PREFIX_color"] == "blue"
    assert (got["POD_NAME"], got["POD_NAMESPACE"], got["NODE"], got["LABEL"]) == ("env-probe", e2e.namespace, "runner-0", "probe")
    assert got["POD_IP"] == pod_ip and got["COMPOSED"] == f"hello-blue@{pod_ip}:5000"
    assert got["ESCAPED"] == "$(FROM_VALUE)" and got["UNDEFINED"] == "$(NOT_DEFINED_ANYWHERE)"
    assert got["HOME"] == "/tmp" and "/bin" in got["PATH"]  # the image's ENV (server-image/Dockerfile)
    assert got["cwd"] == "/work-dir" and got["hostname"] == "probe-host" == got["HOSTNAME"]
    assert got["secret_file"] == "file-token\n" and got["tmp_writable"] is True
    assert got["root_writable"] == "Read-only file system", got["root_writable"]
    term = status["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"


def test_job_exit_code_reaches_the_job(e2e):
    template = pod(e2e, "unused", [{"name": "work", "image": image(), "terminationMessagePolicy": "FallbackToLogsOnError",
                                    "command": ["python", "-c", "import sys; print('migration says no'); sys.exit(3)"]}])
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "exit-three", "namespace": e2e.namespace},
           "spec": {"backoffLimit": 0, "template": {"spec": template["spec"]}}}
    e2e.apply(job)
    done = wait_for("the Job to fail", lambda: (lambda j: j if any(c["type"] == "Failed" and c["status"] == "True" for c in
                    (j.get("status") or {}).get("conditions") or []) else None)(get_json(e2e.cluster, "job", "exit-three", "-n", e2e.namespace)),
                    timeout=120, explain=e2e.explain)
    pods = get_json(e2e.cluster, "pods", "-n", e2e.namespace, "-l", "batch.kubernetes.io/job-name=exit-three")["items"]
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert pods[0]["status"]["phase"] == "Failed" and term["exitCode"] == 3 and term["reason"] == "Error", term
    assert "migration says no" in term.get("message", ""), term
    assert done["status"].get("failed") == 1


def test_unresolvable_pods_get_a_clear_status_and_nothing_runs(e2e):
    ok = {"name": "c", "image": image(), "command": ["python", "-c", "print('ran')"]}
    # an image the runner has no environment for: ErrImagePull naming it, the pod stays Pending
    e2e.apply(pod(e2e, "unknown-image", [dict(ok, image="registry.example.com/other:1.0")]))
    # an exec probe: the runner does not implement it, the pod is rejected (Failed) with the reason
    e2e.apply(pod(e2e, "exec-probe", [dict(ok, readinessProbe={"exec": {"command": ["true"]}})]))
    # a Secret that does not exist yet: CreateContainerConfigError, retried; created later, the pod runs
    e2e.apply(pod(e2e, "late-secret", [dict(ok, env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}])]))

    waiting = wait_for("ErrImagePull", lambda: (lambda s: s if s.get("containerStatuses") and
                       s["containerStatuses"][0]["state"].get("waiting", {}).get("reason") == "ErrImagePull" else None)(
                       pod_status(e2e, "unknown-image")), timeout=60, explain=e2e.explain)
    assert "registry.example.com/other:1.0" in waiting["containerStatuses"][0]["state"]["waiting"]["message"]
    assert waiting["phase"] == "Pending"

    rejected = wait_phase(e2e, "exec-probe", "Failed", timeout=60)
    assert rejected["reason"] == "PodRunnerUnsupported" and "readinessProbe other than httpGet/tcpSocket" in rejected["message"]

    blocked = wait_for("CreateContainerConfigError", lambda: (lambda s: s if s.get("containerStatuses") and
                       s["containerStatuses"][0]["state"].get("waiting", {}).get("reason") == "CreateContainerConfigError" else None)(
                       pod_status(e2e, "late-secret")), timeout=60, explain=e2e.explain)
    assert 'secret "later" not found' in blocked["containerStatuses"][0]["state"]["waiting"]["message"]
    e2e.secret("later", {"k": "v"})
    assert wait_phase(e2e, "late-secret", "Succeeded", "Failed")["phase"] == "Succeeded"
    assert "ran" in e2e.runner.logs(e2e.namespace, "late-secret")
    assert "(no logs" in e2e.runner.logs(e2e.namespace, "unknown-image") and "(no logs" in e2e.runner.logs(e2e.namespace, "exec-probe")


def test_readiness_follows_the_probe_and_deletion_stops_the_process(e2e):
    """A server listening on "all interfaces" of its pod (the image's MLFLOW_OPERATOR_HOST contract): Ready
    only while its readiness endpoint says so; deleting the pod ends its process group."""
    server = textwrap.dedent("""
        import http.server, os
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if os.path.exists("/tmp/ready") else 503)
                self.end_headers()
            def log_message(self, *a):
                pass
        http.server.HTTPServer((os.environ["MLFLOW_OPERATOR_HOST"], 5000), H).serve_forever()
    """)
    c = {"name": "web", "image": image(), "command": ["python", "-c", server],
         "env": [{"name": "MLFLOW_OPERATOR_HOST", "value": "0.0.0.0"}],
         "ports": [{"name": "http", "containerPort": 5000}],
         "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
         "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}
    e2e.apply(pod(e2e, "web", [c], [{"name": "tmp", "emptyDir": {}}], restartPolicy="Always"))
    wait_phase(e2e, "web", "Running")

    def ready() -> bool:
        return any(c["type"] == "Ready" and c["status"] == "True" for c in pod_status(e2e, "web").get("conditions") or [])

    wait_for("an Unhealthy event (503)", lambda: any(e["reason"] == "Unhealthy" for e in get_json(
        e2e.cluster, "events", "-n", e2e.namespace, "--field-selector", "involvedObject.name=web")["items"]),
             timeout=60, explain=e2e.explain)
    assert not ready()
    worker = next(w for w in e2e.runner.all_workers() if w.name == "web" and w.namespace == e2e.namespace)
    flag = worker.volumes["tmp"] / "ready"
    flag.touch()  # the emptyDir is a directory of the node: the probe now answers 200
    wait_for("the pod to become Ready", ready, timeout=60, explain=e2e.explain)
    flag.unlink()
    wait_for("the pod to become not Ready", lambda: not ready(), timeout=60, explain=e2e.explain)
    pgid = worker.containers[0].proc.pid
    e2e.kubectl("delete", "pod", "web", "-n", e2e.namespace, "--wait=true", "--timeout=60s")
    assert get_json(e2e.cluster, "pod", "web", "-n", e2e.namespace) is None
    import os

    try:
        os.killpg(pgid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, "the pod's processes outlived it"
