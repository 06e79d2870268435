"""Every example applied with kubectl, served by real pods on the real node.

The server's readiness probe is answered by MLflow itself in the image `make images` built; the
migration Job runs that image against PostgreSQL; the seed tutorial runs outside the cluster
through `kubectl port-forward`. PostgreSQL and MinIO are the test services on the host's loopback,
reached by pods through a Service of their namespace (reach.py). What each example needs beyond
`kubectl apply` is said where it is done: its Secrets, and MinIO in place of a cloud store.
"""
from __future__ import annotations

import json

import pytest

from tests.operator_fixtures import get_json, wait_for
from tests.workload.conftest import RECHECK, last_json, tutorial_env
from tests.workload.server_env import TUTORIAL

pytestmark = pytest.mark.timeout(1500)

INSIDE = (
    "import json, pathlib; s = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l);"
    "p = pathlib.Path('/opt/mlflow/probe');"
    "r = 'writable'\n"
    "try:\n p.write_text('x')\nexcept OSError as e:\n r = e.strerror\n"
    "print(json.dumps({'uid': s['Uid'].split(), 'gid': s['Gid'].split(), 'capeff': s['CapEff'].strip(),"
    " 'capbnd': s['CapBnd'].strip(), 'nonewprivs': s['NoNewPrivs'].strip(), 'root': r}))"
)


def tutorial(real, url: str, **env: str) -> dict:
    return real.timed("tutorial", lambda: last_json(real.client(TUTORIAL, tutorial_env(url, **env)).stdout))


def test_quickstart_real_pods_tutorial_hardening_and_restart(real):
    """02-sqlite.yaml (`spec: {}`): Ready with a real pod on a dynamically provisioned volume; the
    tutorial through `kubectl port-forward`; the pod as Pod Security `restricted` wants it; a
    deleted pod comes back on the same volume with the same runs."""
    real.apply(real.example("02-sqlite.yaml"))
    live = real.timed("ready", lambda: real.wait_ready("quickstart", MigrationsApplied="True"))
    pvc = get_json(real.cluster, "pvc", "quickstart-data", "-n", real.namespace)
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["storageClassName"], pvc["status"]
    [pod] = real.ready_pods("quickstart")
    mlflow = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "mlflow")
    assert mlflow["ready"] and mlflow["restartCount"] == 0, mlflow
    migrate = next(c for c in pod["status"]["initContainerStatuses"] if c["name"] == "migrate")
    assert migrate["state"]["terminated"]["exitCode"] == 0, migrate

    forward = real.port_forward("quickstart")
    out = tutorial(real, forward.url)
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out

    inside = real.kubectl("exec", "-n", real.namespace, pod["metadata"]["name"], "-c", "mlflow", "--",
                          "python3", "-c", INSIDE).stdout
    facts = json.loads(inside)
    assert facts["uid"] == ["10001"] * 4 and facts["gid"][0] == "10001", facts
    assert facts["capeff"] == "0" * 16 and facts["capbnd"] == "0" * 16, facts
    assert facts["nonewprivs"] == "1", facts
    assert facts["root"] == "Read-only file system", facts
    logs = real.kubectl("logs", "-n", real.namespace, pod["metadata"]["name"], "-c", "mlflow").stdout
    assert "Uvicorn running" in logs or "Application startup complete" in logs, logs[-2000:]

    forward.stop()
    old_uid = pod["metadata"]["uid"]
    real.kubectl("delete", "pod", "-n", real.namespace, pod["metadata"]["name"], "--wait=false")
    real.timed("pod back", lambda: wait_for(
        "a new Ready quickstart pod",
        lambda: [p for p in real.ready_pods("quickstart") if p["metadata"]["uid"] != old_uid],
        timeout=300, interval=1, explain=real.explain))
    real.wait_ready("quickstart")
    again = real.port_forward("quickstart")
    checked = last_json(real.client(RECHECK, {"MLFLOW_TRACKING_URI": again.url, "RUN_ID": out["run_id"]}).stdout)
    assert checked["run_id"] == out["run_id"]


def test_postgres_migration_job_in_a_real_container_then_direct_s3(real):
    """04-remote-direct.yaml: the migration Job (the image's `mlflow-entrypoint migrate`) creates
    the schema in an empty PostgreSQL database; two replicas serve; the client writes artifacts to
    S3 with its own credentials."""
    ts = real.example("04-remote-direct.yaml")
    bucket = real.bucket("acme-ml-artifacts")
    ts["spec"]["artifacts"]["s3"]["endpointUrl"] = real.s3_endpoint()  # MinIO instead of AWS
    ts["spec"]["artifacts"]["s3"]["region"] = real.s3.region
    db_uri = real.database("forecast")
    real.secret("forecast-db", {"uri": db_uri})
    real.s3_secret("forecast-s3")
    real.apply(ts)
    live = real.timed("ready", lambda: real.wait_ready("forecast", MigrationsApplied="True", BackendReachable="True"))
    jobs = get_json(real.cluster, "jobs", "-n", real.namespace, "-l", "app.kubernetes.io/instance=forecast")["items"]
    assert jobs and all(j["status"].get("succeeded") == 1 for j in jobs), [j["status"] for j in jobs]
    job_pods = real.pods(f"job-name={jobs[0]['metadata']['name']}")
    assert job_pods and job_pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    job_log = real.kubectl("logs", "-n", real.namespace, job_pods[0]["metadata"]["name"]).stdout
    assert "migrate:" in job_log and "(migrated)" in job_log, job_log
    tables = real.postgres.query(db_uri.rsplit("/", 1)[1], "SELECT version_num FROM alembic_version")
    assert tables and tables[0][0], tables
    real.wait_pods("forecast", 2)

    forward = real.port_forward("forecast")
    out = tutorial(real, forward.url, **real.s3.env())
    assert out["artifact_uri"].startswith(f"s3://{bucket}/forecast/"), out
    keys = real.s3_keys(bucket, f"forecast/{out['experiment_id']}/")
    assert any(k.endswith(f"{out['run_id']}/artifacts/notes/notes.txt") for k in keys), keys
    assert live["status"]["url"] == f"http://forecast.{real.namespace}.svc:5000"


def test_proxied_s3_the_server_holds_the_keys(real):
    """05-proxied.yaml: three replicas hold the S3 keys, the client none; its ServiceMonitor needs its CRD."""
    real.cluster.install_servicemonitor_crd()
    ts = real.example("05-proxied.yaml")
    bucket = real.bucket("mlflow-nlp")
    ts["spec"]["artifacts"]["s3"]["endpointUrl"] = real.s3_endpoint()
    real.secret("nlp-db", {"uri": real.database("nlp")})
    real.s3_secret("nlp-object-store")
    real.apply(ts)
    real.timed("ready", lambda: real.wait_ready("nlp", MigrationsApplied="True", ArtifactStoreReachable="True"))
    real.wait_pods("nlp", 3)
    forward = real.port_forward("nlp")
    out = tutorial(real, forward.url)
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out
    keys = real.s3_keys(bucket, "artifacts/")
    assert any(k.endswith("MLmodel") for k in keys) and any(k.endswith("notes/notes.txt") for k in keys), keys


def _s3_instead(real, ts: dict, bucket: str, secret: str, prefix: str = "mlflow") -> None:
    """A cloud store this machine cannot reach (GCS, Azure) replaced by MinIO: the only change."""
    artifacts = ts["spec"]["artifacts"]
    for cloud in ("gcs", "azure"):
        artifacts.pop(cloud, None)
    artifacts["destination"] = f"s3://{real.bucket(bucket)}/{prefix}"
    artifacts["s3"] = {"endpointUrl": real.s3_endpoint(), "region": real.s3.region,
                       "accessKeyId": {"secretKeyRef": {"name": secret, "key": "access-key-id"}},
                       "secretAccessKey": {"secretKeyRef": {"name": secret, "key": "secret-access-key"}}}
    real.s3_secret(secret)


def _storage_class_like(real, name: str) -> None:
    """03 asks for StorageClass fast-ssd: here one backed by the node's provisioner."""
    default = next(sc for sc in get_json(real.cluster, "storageclass")["items"]
                   if sc["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true")
    real.apply({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
                "provisioner": default["provisioner"], "volumeBindingMode": default.get("volumeBindingMode", "Immediate"),
                "reclaimPolicy": "Delete"})


def _prepare(real, filename: str) -> tuple[dict, dict[str, int]]:
    """The example with its Secrets (and MinIO for its store); the pods to expect per component."""
    ts = real.example(filename)
    spec = ts["spec"]
    s3 = (spec.get("artifacts") or {}).get("s3")
    if s3 is not None:  # AWS in the example: MinIO here
        s3["endpointUrl"], s3["region"] = real.s3_endpoint(), real.s3.region
        real.bucket(spec["artifacts"].get("destination", spec["artifacts"].get("defaultArtifactRoot", "s3://b/"))
                    .split("/")[2])
    if filename == "03-local-artifacts.yaml":
        _storage_class_like(real, spec["storage"]["storageClassName"])
    elif filename == "06-artifacts-only.yaml":
        _s3_instead(real, ts, "acme-ml-shared-artifacts", "shared-s3")
    elif filename == "07-split.yaml":
        real.secret("recsys-db", {"uri": real.database("recsys")})
        real.s3_secret("recsys-s3")
    elif filename == "08-team.yaml":
        real.secret("fraud-mlflow-db", {"tracking-uri": real.database("fraud"), "auth-uri": real.database("fraud_auth")})
        real.s3_secret("fraud-mlflow-s3")
    elif filename == "09-gateway-azure.yaml":
        real.cluster.install_gateway_api_crds()
        real.secret("speech-db", {"uri": real.database("speech")})
        _s3_instead(real, ts, "acme-speech", "speech-s3", prefix="artifacts")
    replicas = spec.get("replicas", 1)
    if "autoscaling" in spec:
        replicas = spec["autoscaling"]["minReplicas"]
    expected = {"tracking": replicas}
    if spec.get("artifacts", {}).get("mode") == "Split":
        expected["artifacts"] = spec["artifacts"]["replicas"]
    return ts, expected


@pytest.mark.parametrize("filename", [
    "01-file-store.yaml", "03-local-artifacts.yaml", "06-artifacts-only.yaml", "07-split.yaml",
    "08-team.yaml", "09-gateway-azure.yaml",
])
def test_example_converges_to_ready_with_real_pods(real, filename):
    ts, expected = _prepare(real, filename)
    name = ts["metadata"]["name"]
    real.apply(ts)
    live = real.timed("ready", lambda: real.wait_ready(name))
    for component, count in expected.items():
        pods = real.wait_pods(name, count, component)
        for pod in pods:
            for status in pod["status"]["containerStatuses"]:
                assert status["ready"] and status["restartCount"] == 0, (pod["metadata"]["name"], status)
    # MLflow answers through the Service, from outside the cluster
    assert live["status"]["conditions"]
    forward = real.port_forward(name)
    health = real.client("import urllib.request, os; print(urllib.request.urlopen(os.environ['U'] + '/health').read().decode())",
                         {"U": forward.url}).stdout.strip()
    assert health == "OK", health
