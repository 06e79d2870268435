"""Every example applied with kubectl, served by real pods on the real node.

The server's readiness probe is answered by MLflow itself in the image `make images` built (an HTTP
GET of the image's /readyz on the mlflow container's port); the migration Job runs that image against
PostgreSQL; the stock client runs outside the cluster through `kubectl port-forward`. PostgreSQL,
MariaDB, MinIO, Azurite and fake-gcs-server are the test services on the host's loopback, reached by
pods through a Service of their namespace (reach.py). What each example needs beyond `kubectl apply` is done here
as a user would do it and said where it is done: its Secrets (the commands in its comments), a
StorageClass it names, and a local server in place of a cloud endpoint.
"""
from __future__ import annotations

import hashlib
import json

import pytest

from mlflow_operator.constants import READY_PATH
from tests.operator_fixtures import condition, get_json, wait_for
from tests.workload.server_env import RECHECK, last_json, tutorial_env
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

# The stock client's quick round trip: a run with a parameter, a metric and (unless the server has
# no artifact store of its own) an artifact logged through the server and downloaded back.
QUICK = r"""
import json, os, tempfile
import mlflow
example = os.environ["EXAMPLE"]
mlflow.set_experiment("node-" + example)
with mlflow.start_run() as run:
    mlflow.log_param("example", example)
    mlflow.log_metric("x", 1.5)
    path = os.path.join(tempfile.mkdtemp(), "hello.txt")
    with open(path, "w") as fh:
        fh.write("hello from " + example + "\n")
    mlflow.log_artifact(path, "notes")
got = mlflow.get_run(run.info.run_id)
assert got.data.params == {"example": example}, got.data.params
assert got.data.metrics == {"x": 1.5}, got.data.metrics
down = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="notes/hello.txt")
print(json.dumps({"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                  "artifact_uri": run.info.artifact_uri, "downloaded": open(down).read()}))
"""

# An artifacts-only server has no tracking API: the client uses its artifact repository directly.
# A text file and 3 MiB of random bytes (several multipart-sized reads), which must come back identical.
ARTIFACTS_ONLY = r"""
import hashlib, json, os, tempfile
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
repo = get_artifact_repository("mlflow-artifacts:/node-check")
d = tempfile.mkdtemp()
with open(os.path.join(d, "hello.txt"), "w") as fh:
    fh.write("hello from the artifacts-only server\n")
payload = os.urandom(3 * 1024 * 1024)
with open(os.path.join(d, "data.bin"), "wb") as fh:
    fh.write(payload)
repo.log_artifact(os.path.join(d, "hello.txt"), "notes")
repo.log_artifact(os.path.join(d, "data.bin"), "notes")
listed = sorted(f.path for f in repo.list_artifacts("notes"))
down = repo.download_artifacts("notes/hello.txt", tempfile.mkdtemp())
blob = repo.download_artifacts("notes/data.bin", tempfile.mkdtemp())
print(json.dumps({"listed": listed, "downloaded": open(down).read(), "identical": open(blob, "rb").read() == payload,
                  "sha256": hashlib.sha256(payload).hexdigest()}))
"""

HEALTH = """
import json, os, urllib.request
u = os.environ["U"]
print(json.dumps({p: urllib.request.urlopen(u + p, timeout=30).read().decode().strip() for p in os.environ["PATHS"].split()}))
"""


def tutorial(real, url: str, **env: str) -> dict:
    return real.timed("tutorial", lambda: last_json(real.client(TUTORIAL, tutorial_env(url, **env)).stdout))


def assert_served_by_mlflow(real, live: dict, pods: list[dict]) -> None:
    """Each server pod: the image the chart's default names (no spec.image in the examples), its
    readiness answered by the server (/readyz) on the mlflow container's own port, never restarted."""
    for pod in pods:
        container = next(c for c in pod["spec"]["containers"] if c["name"] == "mlflow")
        assert container["image"] == real.operator.default_image, container["image"]
        probe = container["readinessProbe"]["httpGet"]
        assert probe["path"] == READY_PATH and probe["port"] in {p["name"] for p in container["ports"]}, probe
        status = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "mlflow")
        assert status["ready"] and status["restartCount"] == 0 and status["imageID"], (pod["metadata"]["name"], status)
    assert live["status"]["mlflowVersion"] == real.operator.default_image.rpartition(":")[2], live["status"]


def health(real, url: str, *paths: str) -> dict:
    return json.loads(real.client(HEALTH, {"U": url, "PATHS": " ".join(paths or ("/health", "/version"))}).stdout)


def test_quickstart_real_pods_tutorial_hardening_and_restart(real):
    """02-sqlite.yaml (`spec: {}`): Ready with a real pod on a dynamically provisioned volume; the
    tutorial through `kubectl port-forward`; the pod as Pod Security `restricted` wants it; a
    deleted pod comes back on the same volume with the same runs."""
    real.apply(real.example("02-sqlite.yaml"))
    live = real.timed("ready", lambda: real.wait_ready("quickstart", MigrationsApplied="True"))
    pvc = get_json(real.cluster, "pvc", "quickstart-data", "-n", real.namespace)
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["storageClassName"], pvc["status"]
    [pod] = real.ready_pods("quickstart")
    assert_served_by_mlflow(real, live, [pod])
    migrate = next(c for c in pod["status"]["initContainerStatuses"] if c["name"] == "migrate")
    assert migrate["state"]["terminated"]["exitCode"] == 0, migrate

    assert live["status"]["url"] == f"http://quickstart.{real.namespace}.svc:5000", live["status"]
    forward = real.port_forward("quickstart")
    out = tutorial(real, forward.url)
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out
    # the SQLite database and the model (autolog's, proxied by the server) are on the volume
    on_volume = json.loads(_exec(real, pod, "import glob, json, os; print(json.dumps([os.path.isfile('/data/mlflow.db'), "
                                            "glob.glob('/data/artifacts/**/MLmodel', recursive=True)]))"))
    assert on_volume[0] and on_volume[1], on_volume

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


ALEMBIC_HEAD = """
import alembic.script
from mlflow.store.db.utils import _get_alembic_config
print(alembic.script.ScriptDirectory.from_config(_get_alembic_config("sqlite://")).get_current_head())
"""


def test_migration_job_migrates_postgresql_in_a_real_container_before_the_server_pods_start(real):
    """04-remote-direct.yaml: an empty PostgreSQL database; the migration Job's pod (the image's
    `mlflow-entrypoint migrate` in a real container) creates MLflow's schema at the head revision of
    the stock MLflow of the same version; the Deployment and both server pods come only after the Job
    completed; the client writes artifacts to S3 with its own credentials (Direct mode)."""
    ts = real.example("04-remote-direct.yaml")
    bucket = real.bucket("acme-ml-artifacts")
    ts["spec"]["artifacts"]["s3"]["endpointUrl"] = real.s3_endpoint()  # MinIO instead of AWS
    ts["spec"]["artifacts"]["s3"]["region"] = real.s3.region
    db_uri = real.database("forecast")
    dbname = db_uri.rsplit("/", 1)[1]
    before = real.postgres.query(dbname, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
    assert before == [(0,)], before
    real.secret("forecast-db", {"uri": db_uri})
    real.s3_secret("forecast-s3")
    real.apply(ts)
    live = real.timed("ready", lambda: real.wait_ready("forecast", MigrationsApplied="True", BackendReachable="True"))

    [job] = get_json(real.cluster, "jobs", "-n", real.namespace, "-l", "app.kubernetes.io/instance=forecast")["items"]
    assert job["status"].get("succeeded") == 1, job["status"]
    [job_pod] = real.pods(f"job-name={job['metadata']['name']}")
    [migrate] = job_pod["status"]["containerStatuses"]
    assert migrate["state"]["terminated"]["exitCode"] == 0 and migrate["imageID"], migrate
    assert job_pod["spec"]["containers"][0]["image"] == real.operator.default_image
    job_log = real.kubectl("logs", "-n", real.namespace, job_pod["metadata"]["name"]).stdout
    assert "migrate:" in job_log, job_log

    head = real.client(ALEMBIC_HEAD).stdout.strip().splitlines()[-1]
    assert real.postgres.query(dbname, "SELECT version_num FROM alembic_version") == [(head,)], head
    tables = {r[0] for r in real.postgres.query(
        dbname, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    assert {"experiments", "runs", "metrics", "params", "alembic_version"} <= tables, tables

    pods = real.wait_pods("forecast", 2)
    assert_served_by_mlflow(real, live, pods)
    # Kubernetes' timestamps are RFC 3339 UTC to the second: their string order is time order.
    finished = migrate["state"]["terminated"]["finishedAt"]
    deployment = get_json(real.cluster, "deployment", "forecast", "-n", real.namespace)
    assert deployment["metadata"]["creationTimestamp"] >= finished, (deployment["metadata"], finished)
    for pod in pods:
        started = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "mlflow")["state"]["running"]["startedAt"]
        assert pod["metadata"]["creationTimestamp"] >= finished and started >= finished, (
            pod["metadata"]["name"], pod["metadata"]["creationTimestamp"], started, finished)

    forward = real.port_forward("forecast")
    assert health(real, forward.url) == {"/health": "OK", "/version": live["status"]["mlflowVersion"]}
    out = last_json(real.client(QUICK, {"MLFLOW_TRACKING_URI": forward.url, "EXAMPLE": "04", **real.s3.env()}).stdout)
    assert out["artifact_uri"].startswith(f"s3://{bucket}/forecast/"), out
    assert out["downloaded"] == "hello from 04\n", out
    keys = real.s3_keys(bucket, f"forecast/{out['experiment_id']}/")
    assert any(k.endswith(f"{out['run_id']}/artifacts/notes/hello.txt") for k in keys), keys
    assert live["status"]["url"] == f"http://forecast.{real.namespace}.svc:5000"
    # each replica answers for the same run at its pod IP (a Host the entrypoint allows), pod to pod
    answers = run_at_pod_ips(real, pods[0], [p["status"]["podIP"] for p in pods], out["run_id"])
    assert len(answers) == 2 and set(answers.values()) == {out["run_id"]}, answers


# -- the other examples: what each needs beyond `kubectl apply`, and what to check after

def _storage_class_like(real, name: str) -> None:
    """03 asks for StorageClass fast-ssd: here one backed by the node's provisioner."""
    default = next(sc for sc in get_json(real.cluster, "storageclass")["items"]
                   if sc["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true")
    real.apply({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
                "provisioner": default["provisioner"], "volumeBindingMode": default.get("volumeBindingMode", "Immediate"),
                "reclaimPolicy": "Delete"})


def _minio_for_aws(real, ts: dict) -> str:
    """An AWS S3 example: MinIO's endpoint and region instead (the spec's only change); its bucket."""
    artifacts = ts["spec"]["artifacts"]
    artifacts["s3"]["endpointUrl"], artifacts["s3"]["region"] = real.s3_endpoint(), real.s3.region
    return real.bucket(artifacts["destination"].split("/")[2])


def _fake_gcs_for_gcs(real, ts: dict) -> str:
    """A Google Cloud Storage example: fake-gcs-server's endpoint instead of a service account key
    (google-cloud-storage sends no credentials to an endpointUrl, so the API refuses a key with it);
    its bucket created, as on GCS."""
    gcs = ts["spec"]["artifacts"]["gcs"]
    assert gcs.pop("serviceAccountKey"), gcs
    gcs["endpointUrl"] = real.gcs_endpoint()
    return real.gcs.create_bucket(ts["spec"]["artifacts"]["destination"].removeprefix("gs://").split("/", 1)[0])


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# azure-storage-blob (MLflow's Azure repository's client) in the client virtualenv, against Azurite on
# loopback: the container created (ACTION=create) or not, then its blobs under PREFIX with the SHA-256
# of each (ACTION=read) or none.
AZURE_BLOBS = """
import hashlib, json, os
from azure.storage.blob import BlobServiceClient
service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
container = service.get_container_client(os.environ["CONTAINER"])
if os.environ["ACTION"] == "create":
    container.create_container()
names = [b.name for b in container.list_blobs(name_starts_with=os.environ.get("PREFIX") or None)]
read = os.environ["ACTION"] == "read"
print(json.dumps({n: hashlib.sha256(container.download_blob(n).readall()).hexdigest() if read else None for n in names}))
"""


def _azure_blobs(real, action: str, container: str, prefix: str = "") -> dict[str, str | None]:
    """The container's blobs (under `prefix`) as Azurite lists them; with action "read" each one's SHA-256."""
    env = {**real.azurite.env(), "CONTAINER": container, "ACTION": action, "PREFIX": prefix}
    return last_json(real.client(AZURE_BLOBS, env, timeout=120).stdout)


def _pods_ready(real, name: str, expected: dict[str, int]) -> dict[str, list[dict]]:
    return {component: real.wait_pods(name, count, component) for component, count in expected.items()}


def _quick(real, url: str, example: str, **env: str) -> dict:
    return real.timed("client", lambda: last_json(
        real.client(QUICK, {"MLFLOW_TRACKING_URI": url, "EXAMPLE": example, **env}).stdout))


def _exec(real, pod: dict, code: str, *args: str) -> str:
    return real.kubectl("exec", "-n", real.namespace, pod["metadata"]["name"], "-c", "mlflow", "--",
                        "python3", "-c", code, *args).stdout.strip()


RUN_AT = """
import json, sys, urllib.request
run_id, ips = sys.argv[1], sys.argv[2:]
got = {ip: json.load(urllib.request.urlopen(f"http://{ip}:5000/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=30))
       for ip in ips}
print(json.dumps({ip: answer["run"]["info"]["run_id"] for ip, answer in got.items()}))
"""


def run_at_pod_ips(real, pod: dict, ips: list[str], run_id: str) -> dict[str, str]:
    """From inside `pod`: the run as each server pod answers for it at its own IP."""
    return json.loads(_exec(real, pod, RUN_AT, run_id, *ips))


# Every process of the container (the server, its uvicorn workers, this one): variable names only.
PROCESS_ENV = """
import glob, json
names = {}
for path in glob.glob("/proc/[0-9]*/environ"):
    try:
        names[path.split("/")[2]] = sorted({item.split(b"=", 1)[0].decode() for item in open(path, "rb").read().split(b"\\0") if b"=" in item})
    except OSError:
        pass
print(json.dumps(names))
"""


def check_01(real, ts, live, pods):
    """FileStore: the run is a directory of files on the volume, artifacts beside it."""
    forward = real.port_forward("legacy-mlruns")
    out = _quick(real, forward.url, "01")
    assert out["downloaded"] == "hello from 01\n", out
    [pod] = pods["tracking"]
    run_dir = f"/data/mlruns/{out['experiment_id']}/{out['run_id']}"
    assert _exec(real, pod, f"import os; print(os.path.isfile('{run_dir}/meta.yaml'), "
                            f"open('{run_dir}/params/example').read())") == "True 01"
    # the artifact went through the server (mlflow-artifacts:) onto the same volume
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out
    found = _exec(real, pod, "import glob; print(glob.glob('/data/**/notes/hello.txt', recursive=True))")
    assert out["run_id"] in found, found


def check_03(real, ts, live, pods):
    """Local artifacts on a volume of the StorageClass the spec names, served by the server; its Ingress."""
    pvc = get_json(real.cluster, "pvc", "vision-data", "-n", real.namespace)
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["storageClassName"] == "fast-ssd", pvc
    ingress = get_json(real.cluster, "ingress", "vision", "-n", real.namespace)
    assert ingress["spec"]["ingressClassName"] == "nginx", ingress["spec"]
    assert ingress["spec"]["rules"][0]["host"] == "mlflow.vision.example.com", ingress["spec"]
    forward = real.port_forward("vision")
    out = _quick(real, forward.url, "03")
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out
    assert out["downloaded"] == "hello from 03\n", out
    [pod] = pods["tracking"]
    found = _exec(real, pod, "import glob; print(glob.glob('/data/artifacts/**/hello.txt', recursive=True))")
    assert out["run_id"] in found, found


def check_05(real, ts, live, pods):
    """Proxied S3: the server holds the keys, the client none; budget and ServiceMonitor are there."""
    forward = real.port_forward("nlp")
    out = _quick(real, forward.url, "05")
    assert out["artifact_uri"].startswith("mlflow-artifacts:/") and out["downloaded"] == "hello from 05\n", out
    keys = real.s3_keys("mlflow-nlp", "artifacts/")
    assert any(k.endswith(f"{out['run_id']}/artifacts/notes/hello.txt") for k in keys), keys
    assert get_json(real.cluster, "pdb", "nlp", "-n", real.namespace)["spec"]["maxUnavailable"] == 1
    monitor = get_json(real.cluster, "servicemonitor", "nlp", "-n", real.namespace)
    assert monitor["metadata"]["labels"]["release"] == "prometheus", monitor["metadata"]
    metrics = real.port_forward("nlp", 9090)
    text = real.client("import os, urllib.request; print(urllib.request.urlopen(os.environ['U'] + '/metrics').read().decode())",
                       {"U": metrics.url}).stdout
    assert "mlflow_http_request_duration_seconds_bucket{" in text, text[:2000]


def check_06(real, ts, live, pods):
    """Artifacts only: upload, list and download through the server; the object lands in the store."""
    forward = real.port_forward("gcs-artifacts")
    out = last_json(real.client(ARTIFACTS_ONLY, {"MLFLOW_TRACKING_URI": forward.url}).stdout)
    sha256 = out.pop("sha256")
    assert out == {"listed": ["notes/data.bin", "notes/hello.txt"], "downloaded": "hello from the artifacts-only server\n",
                   "identical": True}, out
    bucket = "acme-ml-shared-artifacts"
    assert set(real.gcs.object_names(bucket, "mlflow/")) == {"mlflow/node-check/notes/hello.txt",
                                                             "mlflow/node-check/notes/data.bin"}
    assert real.gcs.read(bucket, "mlflow/node-check/notes/hello.txt") == b"hello from the artifacts-only server\n"
    assert _sha256(real.gcs.read(bucket, "mlflow/node-check/notes/data.bin")) == sha256
    tracking = real.client(
        "import os, urllib.request, urllib.error\n"
        "try:\n r = urllib.request.urlopen(os.environ['U'] + '/api/2.0/mlflow/experiments/search?max_results=1'); print(r.status, r.read().decode()[:300])\n"
        "except urllib.error.HTTPError as e:\n print(e.code, e.read().decode()[:300])", {"U": forward.url}).stdout.strip()
    assert int(tracking.split()[0]) >= 400 and "artifacts-only" in tracking, tracking
    for pod in pods["tracking"]:  # the artifacts-only pods: the store's settings are theirs
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["STORAGE_EMULATOR_HOST"] == f"http://fake-gcs.{real.namespace}.svc:4443", env
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in env, env


# What the web UI does to show a run's artifacts: list them (the ajax artifact API and the run's
# listing) and open one (get-artifact): served by a metadata pod, which fetches from the artifacts pods.
UI_ENDPOINTS = r"""
import json, os
import requests

base, run_id, exp = os.environ["MLFLOW_TRACKING_URI"], os.environ["RUN_ID"], os.environ["EXPERIMENT_ID"]
listing = requests.get(f"{base}/ajax-api/2.0/mlflow-artifacts/artifacts",
                       params={"path": f"{exp}/{run_id}/artifacts/notes"}, timeout=60)
listed = requests.get(f"{base}/ajax-api/2.0/mlflow/artifacts/list", params={"run_id": run_id, "path": "notes"},
                      timeout=60)
download = requests.get(f"{base}/get-artifact", params={"path": os.environ.get("FILE", "notes/hello.txt"), "run_uuid": run_id},
                        timeout=60)
print(json.dumps({"listing": [listing.status_code, listing.text[:500]], "listed": [listed.status_code, listed.text[:500]],
                  "download": [download.status_code, download.text[:200]]}))
"""


def check_07(real, ts, live, pods):
    """Split: the run through the metadata pods; its artifact through them to the artifacts pods (Service
    DNS inside the cluster) and on to S3; only the artifacts pods hold the S3 keys, in their spec and
    in every process; the web UI's artifact listing and download work."""
    assert live["status"]["url"] == "https://mlflow.recsys.example.com", live["status"]  # one host for both kinds
    forward = real.port_forward("recsys")
    out = _quick(real, forward.url, "07")
    assert out["downloaded"] == "hello from 07\n", out
    keys = real.s3_keys("acme-ml-recsys", "mlflow/")
    assert any(k.endswith(f"{out['run_id']}/artifacts/notes/hello.txt") for k in keys), keys
    for pod in pods["tracking"]:
        names = {e["name"] for e in pod["spec"]["containers"][0].get("env", [])}
        assert not {n for n in names if n.startswith(("AWS_", "MLFLOW_S3_"))}, names
        processes = json.loads(_exec(real, pod, PROCESS_ENV))
        assert len(processes) >= 3, processes  # the server, its uvicorn workers, this exec
        leaked = {pid: [n for n in env if n.startswith(("AWS_", "MLFLOW_S3_"))] for pid, env in processes.items()}
        assert not any(leaked.values()), f"metadata pod {pod['metadata']['name']}: {leaked}"
    for pod in pods["artifacts"]:
        assert "AWS_SECRET_ACCESS_KEY" in {e["name"] for e in pod["spec"]["containers"][0].get("env", [])}

    ui = last_json(real.client(UI_ENDPOINTS, {"MLFLOW_TRACKING_URI": forward.url, "RUN_ID": out["run_id"],
                                              "EXPERIMENT_ID": out["experiment_id"]}).stdout)
    assert ui["listing"][0] == 200 and "hello.txt" in ui["listing"][1], ui
    assert ui["listed"][0] == 200 and "notes/hello.txt" in ui["listed"][1], ui
    assert ui["download"] == [200, "hello from 07\n"], ui
    logs = "".join(real.kubectl("logs", "-n", real.namespace, p["metadata"]["name"], "-c", "mlflow").stdout
                   for p in pods["artifacts"])
    assert "PUT /api/2.0/mlflow-artifacts/artifacts/" in logs, logs[-3000:]
    assert "GET /api/2.0/mlflow-artifacts/artifacts/" in logs and "notes/hello.txt" in logs, logs[-3000:]


AUTH_ANSWERS = r"""
import json, os
import requests

base = os.environ["MLFLOW_TRACKING_URI"]
url = base + "/api/2.0/mlflow/experiments/search"
print(json.dumps({
    "anonymous": requests.get(url, params={"max_results": 1}, timeout=60).status_code,
    "wrong": requests.get(url, params={"max_results": 1}, auth=(os.environ["USER"], "not-the-password-123"), timeout=60).status_code,
    "admin": requests.get(url, params={"max_results": 1}, auth=(os.environ["USER"], os.environ["PASSWORD"]), timeout=60).status_code,
    "health": requests.get(base + "/health", timeout=60).status_code,
}))
"""

# The signup form of replica A (its CSRF token lives in A's Flask session cookie) submitted to replica
# B: B accepts it only if both sign sessions with the same secret key. Without the cookie the same
# token is refused (so the check is a real one). The new user then reads through either replica (one
# users database).
SESSIONS = r"""
import json, os, re, secrets
import requests

a, b, run_id = os.environ["A"], os.environ["B"], os.environ["RUN_ID"]
admin = (os.environ["USER"], os.environ["PASSWORD"])
session = requests.Session()
form = session.get(a + "/signup", auth=admin, timeout=60)
assert form.status_code == 200, (form.status_code, form.text[:300])
token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
assert cookie, "replica A set no session cookie"
user, password = "analyst-" + secrets.token_hex(3), "pw-" + secrets.token_urlsafe(12)
created = requests.post(b + "/api/2.0/mlflow/users/create-ui", auth=admin, headers={"Cookie": cookie}, timeout=60,
                        data={"csrf_token": token, "username": user, "password": password})
stranger = requests.post(b + "/api/2.0/mlflow/users/create-ui", auth=admin, timeout=60,
                         data={"csrf_token": token, "username": user + "x", "password": password})
reads = [requests.get(base + "/api/2.0/mlflow/runs/get", params={"run_id": run_id}, auth=(user, password),
                      timeout=60).status_code for base in (a, b)]
print(json.dumps({"created": [created.status_code, "Successfully signed up" in created.text, created.text[:300]],
                  "stranger": [stranger.status_code, "CSRF" in stranger.text], "reads": reads}))
"""


def check_08(real, ts, live, pods):
    """Basic auth: anonymous and wrong-password requests get 401, the generated admin 200; the admin
    logs a run whose artifact lands in S3; a session started on one replica is honoured by the
    other (one Flask secret key, one users database); the password is in no status nor log line."""
    assert live["status"]["url"] == "https://mlflow.fraud.example.com", live["status"]
    user, password = real.secret_value("fraud-admin", "username"), real.secret_value("fraud-admin", "password")
    assert user == "admin" and len(password) >= 12, user
    forward = real.port_forward("fraud")
    answers = last_json(real.client(AUTH_ANSWERS, {"MLFLOW_TRACKING_URI": forward.url, "USER": user,
                                                   "PASSWORD": password}).stdout)
    assert answers == {"anonymous": 401, "wrong": 401, "admin": 200, "health": 200}, answers
    creds = {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
    out = _quick(real, forward.url, "08", **creds)
    assert out["downloaded"] == "hello from 08\n", out
    denied = real.client(QUICK, {"MLFLOW_TRACKING_URI": forward.url, "EXAMPLE": "08",
                                 "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": "wrong-password-1234"},
                         check=False)
    assert denied.returncode != 0 and "401" in denied.stderr, denied.stderr[-2000:]

    one, other = (real.port_forward_to_pod(p["metadata"]["name"]) for p in pods["tracking"])
    sessions = last_json(real.client(SESSIONS, {"A": one.url, "B": other.url, "RUN_ID": out["run_id"],
                                                "USER": user, "PASSWORD": password}).stdout)
    assert sessions["created"][:2] == [200, True], sessions
    assert sessions["stranger"] == [400, True], sessions
    assert sessions["reads"] == [200, 200], sessions
    assert password not in json.dumps(get_json(real.cluster, "trackingserver", "fraud", "-n", real.namespace)["status"])
    assert password not in real.operator.logs(lines=-1)
    keys = real.s3_keys("acme-team-fraud", "mlflow/")
    assert any(k.endswith(f"{out['run_id']}/artifacts/notes/hello.txt") for k in keys), keys
    policy = get_json(real.cluster, "networkpolicy", "fraud", "-n", real.namespace)
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "fraud", policy["spec"]


def check_09(real, ts, live, pods):
    """MariaDB, Azure Blob (Azurite) through the proxy, an HTTPRoute to the Gateway, an HPA from 2 to 6."""
    route = get_json(real.cluster, "httproute", "speech", "-n", real.namespace)
    # the API server adds the defaults (group, kind) to what the spec names
    refs = [{k: ref.get(k) for k in ("name", "namespace", "sectionName")} for ref in route["spec"]["parentRefs"]]
    assert refs == ts["spec"]["gateway"]["parentRefs"], route["spec"]
    assert route["spec"]["hostnames"] == ["mlflow.speech.example.com"], route["spec"]
    hpa = get_json(real.cluster, "hpa", "speech", "-n", real.namespace)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6), hpa["spec"]
    backend = condition(live, "BackendReachable")  # MariaDB checked from the pods, with a real handshake
    assert backend["status"] == "True" and backend["reason"] == "Reachable", backend
    forward = real.port_forward("speech")
    out = _quick(real, forward.url, "09")
    assert out["downloaded"] == "hello from 09\n", out
    blobs = list(_azure_blobs(real, "list", "mlflow"))
    assert any(b.startswith("artifacts/") and b.endswith(f"{out['run_id']}/artifacts/notes/hello.txt") for b in blobs), blobs
    tables = {r[0] for r in real.mysql.query(
        real.secret_value("speech-db", "uri").rsplit("/", 1)[1], "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")}
    assert {"experiments", "runs", "alembic_version"} <= tables, tables


def prepare(real, filename: str) -> tuple[dict, dict[str, int]]:
    """The example with its Secrets (and local servers for its stores); the pods to expect per component."""
    ts = real.example(filename)
    spec = ts["spec"]
    if filename == "03-local-artifacts.yaml":
        _storage_class_like(real, spec["storage"]["storageClassName"])
    elif filename == "05-proxied.yaml":
        spec["artifacts"]["s3"]["endpointUrl"] = real.s3_endpoint()  # the example's in-cluster S3 server
        real.bucket("mlflow-nlp")
        real.secret("nlp-db", {"uri": real.database("nlp")})
        real.s3_secret("nlp-object-store")
    elif filename == "06-artifacts-only.yaml":
        _fake_gcs_for_gcs(real, ts)
    elif filename == "07-split.yaml":
        _minio_for_aws(real, ts)
        real.secret("recsys-db", {"uri": real.database("recsys")})
        real.s3_secret("recsys-s3")
    elif filename == "08-team.yaml":
        _minio_for_aws(real, ts)
        real.secret("fraud-mlflow-db", {"tracking-uri": real.database("fraud"), "auth-uri": real.database("fraud_auth")})
        real.s3_secret("fraud-mlflow-s3")
    elif filename == "09-gateway-azure.yaml":
        real.secret("speech-db", {"uri": real.mysql_database("speech")})
        real.secret("speech-azure", {"connection-string": real.azure_connection_string()})
        # Azurite's account instead of acmespeech (the spec's only change); the container created as on Azure
        destination = spec["artifacts"]["destination"]
        assert destination.startswith("wasbs://mlflow@acmespeech.blob.core.windows.net/"), destination
        spec["artifacts"]["destination"] = destination.replace("@acmespeech.", f"@{real.azurite.account}.")
        assert _azure_blobs(real, "create", "mlflow") == {}
    replicas = spec.get("replicas", 1)
    if "autoscaling" in spec:
        replicas = spec["autoscaling"]["minReplicas"]
    expected = {"tracking": replicas}
    if spec.get("artifacts", {}).get("mode") == "Split":
        expected["artifacts"] = spec["artifacts"]["replicas"]
    return ts, expected


CHECKS = {"01-file-store.yaml": check_01, "03-local-artifacts.yaml": check_03, "05-proxied.yaml": check_05,
          "06-artifacts-only.yaml": check_06, "07-split.yaml": check_07, "08-team.yaml": check_08,
          "09-gateway-azure.yaml": check_09}


@pytest.mark.parametrize("filename", sorted(CHECKS))
def test_example_converges_to_ready_with_real_pods_and_serves_the_client(real, filename):
    ts, expected = prepare(real, filename)
    name = ts["metadata"]["name"]
    real.apply(ts)
    live = real.timed("ready", lambda: real.wait_ready(name))
    pods = _pods_ready(real, name, expected)
    for component_pods in pods.values():
        assert_served_by_mlflow(real, live, component_pods)
    forward = real.port_forward(name)
    answers = health(real, forward.url, "/health", *(() if "auth" in ts["spec"] else ("/version",)))  # basic-auth: 401
    assert answers == {"/health": "OK", **({} if "auth" in ts["spec"] else {"/version": live["status"]["mlflowVersion"]})}
    forward.stop()
    CHECKS[filename](real, ts, live, pods)


# Every artifact of a run and of the models it logged (autolog's), downloaded through MLflow: each
# artifact location with the SHA-256 of each file under it.
ARTIFACT_DIGESTS = r"""
import hashlib, json, os, pathlib, tempfile
import mlflow
run = mlflow.get_run(os.environ["RUN_ID"])
locations = {run.info.artifact_uri: f"runs:/{run.info.run_id}/"}
for model in mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list",
                                         filter_string=f"source_run_id = '{run.info.run_id}'"):
    locations[model.artifact_location] = f"models:/{model.model_id}"
digests = {}
for location, uri in locations.items():
    root = pathlib.Path(mlflow.artifacts.download_artifacts(uri, dst_path=tempfile.mkdtemp()))
    digests[location] = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                         for p in root.rglob("*") if p.is_file()}
print(json.dumps(digests))
"""


def _seed_tutorial_in_the_store(real, name: str, mode: str, root: str, client_env: dict[str, str], stored) -> None:
    """The seed tutorial on server `name`, whose store is `root` + "/" + the mode's prefix; the client has
    `client_env` (Direct mode: what it needs to write there itself). The run's artifact URI is the store's
    (Direct) or the proxy's; every file of the run and of autolog's model is in the store under it,
    byte-identical to what the client reads back (`stored(prefix)`: the store's names under `prefix`,
    relative to it, with each one's SHA-256); the server itself reads the run's file back from the store
    (the web UI's download: in Direct mode with the pods' own store settings)."""
    prefix = mode.lower()
    forward = real.port_forward(name)
    out = tutorial(real, forward.url, **client_env)
    digests = last_json(real.client(ARTIFACT_DIGESTS, {"MLFLOW_TRACKING_URI": forward.url, "RUN_ID": out["run_id"],
                                                       **client_env}).stdout)
    # where each artifact location is in the store: the proxy's paths are under the destination's prefix
    store_uri = f"{root}/" if mode == "Direct" else "mlflow-artifacts:/"
    assert out["artifact_uri"].startswith(store_uri + (f"{prefix}/" if mode == "Direct" else "")), out
    assert len(digests) == 2, digests  # the run's artifacts and autolog's model
    for location, files in digests.items():
        assert location.startswith(store_uri), (location, store_uri)
        under = location.removeprefix(store_uri).lstrip("/")
        under = under if mode == "Direct" else f"{prefix}/{under}"
        in_store = stored(under + "/")
        assert in_store == files and files, (location, sorted(in_store), sorted(files))
    run_files = digests[out["artifact_uri"]]
    assert run_files["notes/notes.txt"] == _sha256(b"hello from the tutorial\n"), run_files
    model_files = next(files for location, files in digests.items() if location != out["artifact_uri"])
    assert "MLmodel" in model_files, model_files
    ui = last_json(real.client(UI_ENDPOINTS, {"MLFLOW_TRACKING_URI": forward.url, "RUN_ID": out["run_id"],
                                              "EXPERIMENT_ID": out["experiment_id"], "FILE": "notes/notes.txt"}).stdout)
    assert ui["listed"][0] == 200 and "notes/notes.txt" in ui["listed"][1], ui
    assert ui["download"] == [200, "hello from the tutorial\n"], ui


@pytest.mark.parametrize("mode", ["Proxied", "Direct"])
def test_seed_tutorial_with_artifacts_in_google_cloud_storage(real, mode):
    """Google Cloud Storage (fake-gcs-server through spec.artifacts.gcs.endpointUrl) in Proxied mode
    (the server writes; the client has no store settings) and in Direct mode (the client on the host
    writes to fake-gcs-server itself): the seed tutorial; every file of its run and of its model is
    in the bucket under the spec's prefix, byte-identical to what the client reads back."""
    name, prefix = f"gcs-{mode.lower()}", mode.lower()
    bucket = real.gcs.create_bucket("mlflow-gcs-artifacts")
    endpoint = real.gcs_endpoint()
    where = {"defaultArtifactRoot" if mode == "Direct" else "destination": f"gs://{bucket}/{prefix}"}
    real.apply({"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
                "metadata": {"name": name, "namespace": real.namespace},
                "spec": {"artifacts": {"mode": mode, **where, "gcs": {"endpointUrl": endpoint}}}})
    live = real.timed("ready", lambda: real.wait_ready(name))
    [pod] = real.wait_pods(name, 1)
    assert_served_by_mlflow(real, live, [pod])
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["STORAGE_EMULATOR_HOST"] == endpoint and "GOOGLE_APPLICATION_CREDENTIALS" not in env, env

    def stored(under: str) -> dict[str, str]:
        return {n.removeprefix(under): _sha256(real.gcs.read(bucket, n)) for n in real.gcs.object_names(bucket, under)}

    client_env = real.gcs.env() if mode == "Direct" else {}  # Proxied: the client knows no store
    _seed_tutorial_in_the_store(real, name, mode, f"gs://{bucket}", client_env, stored)


@pytest.mark.parametrize("mode", ["Proxied", "Direct"])
def test_seed_tutorial_with_artifacts_in_azure_blob_storage(real, mode):
    """Azure Blob Storage (Azurite: its storage account in the wasbs:// URI, its blob endpoint in the
    connection string of spec.artifacts.azure.connectionString, as pods reach it) in Proxied mode (the
    server writes; the client has no store settings) and in Direct mode (the server answers the wasbs://
    URI and the client on the host writes to Azurite itself, with its own connection string): the seed
    tutorial; every file of its run and of its model is in the container under the spec's prefix,
    byte-identical to what the client reads back."""
    name, prefix, container = f"azure-{mode.lower()}", mode.lower(), f"mlflow-{mode.lower()}"
    assert _azure_blobs(real, "create", container) == {}
    real.secret(name, {"connection-string": real.azure_connection_string()})
    root = f"wasbs://{container}@{real.azurite.account}.blob.core.windows.net"
    where = {"defaultArtifactRoot" if mode == "Direct" else "destination": f"{root}/{prefix}"}
    azure = {"connectionString": {"secretKeyRef": {"name": name, "key": "connection-string"}}}
    real.apply({"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
                "metadata": {"name": name, "namespace": real.namespace},
                "spec": {"artifacts": {"mode": mode, **where, "azure": azure}}})
    live = real.timed("ready", lambda: real.wait_ready(name))
    [pod] = real.wait_pods(name, 1)
    assert_served_by_mlflow(real, live, [pod])
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["AZURE_STORAGE_CONNECTION_STRING"]["valueFrom"]["secretKeyRef"] == {
        "name": name, "key": "connection-string"}, env["AZURE_STORAGE_CONNECTION_STRING"]

    def stored(under: str) -> dict[str, str]:
        return {n.removeprefix(under): sha256 for n, sha256 in _azure_blobs(real, "read", container, under).items()}

    client_env = real.azurite.env() if mode == "Direct" else {}  # Proxied: the client knows no store
    _seed_tutorial_in_the_store(real, name, mode, root, client_env, stored)


PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff"}


def test_an_image_that_does_not_exist_gets_a_warning_event_and_a_condition_naming_the_pull_failure(real):
    """spec.image names an image no registry has (here: a registry on the node's loopback, which
    refuses): the kubelet's ErrImagePull / ImagePullBackOff reaches Available and Ready, and a
    Warning event on the TrackingServer says it."""
    missing = "localhost/mlflow-operator-test/no-such-server:3.18.0"
    real.apply({"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
                "metadata": {"name": "no-image", "namespace": real.namespace}, "spec": {"image": missing}})

    def pulled_failed():
        live = get_json(real.cluster, "trackingserver", "no-image", "-n", real.namespace)
        available = condition(live, "Available")
        if available.get("status") == "False" and available.get("reason") in PULL_FAILURES \
                and available.get("observedGeneration") == live["metadata"]["generation"]:
            return live
        return None

    live = real.timed("pull failure seen", lambda: wait_for(
        "Available=False naming the pull failure", pulled_failed, timeout=300, interval=1, explain=real.explain))
    ready = condition(live, "Ready")
    assert ready["status"] == "False" and ready["reason"] in PULL_FAILURES, ready
    # what the kubelet really reported for the pod's containers
    [pod] = real.pods("app.kubernetes.io/instance=no-image")
    statuses = (pod["status"].get("initContainerStatuses") or []) + (pod["status"].get("containerStatuses") or [])
    waiting = {s["state"]["waiting"]["reason"] for s in statuses if "waiting" in s["state"]}
    assert waiting & PULL_FAILURES, statuses
    assert all(s["image"] == missing for s in statuses), statuses

    def warned():
        events = get_json(real.cluster, "events", "-n", real.namespace, "--field-selector",
                          "involvedObject.kind=TrackingServer,involvedObject.name=no-image")["items"]
        return [e for e in events if e["type"] == "Warning" and e["reason"] in PULL_FAILURES] or None

    [event, *_] = wait_for("a Warning event naming the pull failure", warned, timeout=120, interval=1, explain=real.explain)
    assert event["message"].startswith("Available: ") and event["reason"] in event["message"], event
