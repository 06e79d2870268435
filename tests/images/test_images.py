"""The two images as `make images` builds them from the Dockerfiles, run in real containers (runc):
the image's user, ENTRYPOINT, read-only root, no capabilities, as the operator's pods run them."""
from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from images.container import RUN_AS, Container, image_config, run
from mlflow_operator.constants import ENTRYPOINT, MLFLOW_VERSION
from mlflow_operator.render import render

REPO = Path(__file__).resolve().parents[2]
MB = 1_000_000
# Unpacked size bounds (what each node stores). The Debian base is ~175 MB (python3 and
# ca-certificates), the stock slim one ~125 MB. The server's environment is 342 MB (the bench
# prints it), the operator's ~60 MB. A bound well under a full MLflow install (900 MB
# environment) catches a dependency that drags the ML stack in.
SIZE_BOUNDS = {"operator": 320 * MB, "server": 600 * MB}


@pytest.fixture(scope="module", autouse=True)
def _root_and_runc():
    if os.geteuid() != 0:
        pytest.fail("running containers with runc needs root here (no rootless setup)", pytrace=False)


@pytest.mark.parametrize("name", sorted(SIZE_BOUNDS))
def test_image_size_is_within_its_bound(built_images, name):
    image = built_images[name]
    print(image.describe())
    assert image.size_bytes <= SIZE_BOUNDS[name], (
        f"{image.ref} is {image.size_bytes / MB:.0f} MB unpacked, over its bound of "
        f"{SIZE_BOUNDS[name] / MB:.0f} MB: what was added?"
    )
    assert image.archive_bytes < image.size_bytes * 1.05, "the archive should be no larger than its layers"


def test_images_carry_the_refs_the_chart_and_the_operator_default_to(built_images):
    values = yaml.safe_load((REPO / "charts/mlflow-operator/values.yaml").read_text())
    chart = yaml.safe_load((REPO / "charts/mlflow-operator/Chart.yaml").read_text())
    assert built_images["operator"].ref == f"{values['image']['repository']}:{chart['appVersion']}"
    assert built_images["server"].ref.endswith(f":{MLFLOW_VERSION}")


def test_server_image_runs_as_10001_with_the_entrypoint(built_images):
    config = image_config(built_images["server"])
    assert config["User"] == f"{RUN_AS}:{RUN_AS}"
    assert config["Entrypoint"] == [ENTRYPOINT]
    assert config["Cmd"] == ["serve"]


def test_operator_image_runs_as_10001_and_renders_with_its_packaged_templates(built_images):
    image = built_images["operator"]
    config = image_config(image)
    assert config["User"] == f"{RUN_AS}:{RUN_AS}"
    assert config["Entrypoint"] == ["mlflow-operator"]
    rc, out = run(image, args=["render", "-f", "/examples/02-sqlite.yaml"], ro_mounts={"/examples": REPO / "examples"})
    assert rc == 0, out
    kinds = {doc["kind"] for doc in yaml.safe_load_all(out) if doc}
    assert {"Deployment", "Service", "PersistentVolumeClaim"} <= kinds, out[-2000:]
    # Kopf names its peering identity after the user when POD_ID is unset: the UID needs a name
    rc, out = run(image, command=["python3", "-c", "import getpass, os; print(getpass.getuser(), os.environ['HOME'])"])
    assert (rc, out.split()) == (0, ["mlflow-operator", "/tmp"]), out


def _quickstart_containers() -> dict[str, dict]:
    """The quickstart's migrate and serve containers exactly as the operator renders them."""
    example = yaml.safe_load((REPO / "examples/02-sqlite.yaml").read_text())
    deployment = next(m for m in render(example) if m["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["initContainers"] + pod["containers"]}


def _env(container: dict, pod_ip: str = "127.0.0.1") -> dict[str, str]:
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"].replace("$(POD_IP)", pod_ip)
    return env


PROBE = textwrap.dedent("""
    import json, os, sys, urllib.error, urllib.request
    def call(path, body=None, host=None):
        headers = {"Content-Type": "application/json", **({"Host": host} if host else {})}
        req = urllib.request.Request("http://127.0.0.1:5000" + path, method="POST" if body else "GET",
            data=json.dumps(body).encode() if body else None, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
    health = call("/health")
    created = json.loads(call("/api/2.0/mlflow/experiments/create", {"name": "in-a-container"})[1])
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    hosts = {h: call(search, host=h)[0] for h in ("localhost:8080", "127.0.0.1:31000", "rebind.example.com")}
    try:
        open("/opt/mlflow/written-at-run-time", "w")
        root = "writable"
    except OSError as e:
        root = e.strerror
    status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
    print(json.dumps({"health": health, "experiment": created, "root": root, "hosts": hosts,
                      "uid": status["Uid"].split(), "capeff": status["CapEff"].strip()}))
""")


def test_server_image_serves_the_quickstart_on_a_read_only_root(built_images, tmp_path):
    """migrate, then serve, as the quickstart's pod runs them: SQLite on /data, scratch on /tmp."""
    containers = _quickstart_containers()
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, RUN_AS, RUN_AS)  # what fsGroup does for the PVC
    image = built_images["server"]

    migrate = containers["migrate"]
    rc, out = run(image, command=migrate["command"], env=_env(migrate), data_dir=data, timeout=180)
    assert rc == 0, out
    assert (data / "mlflow.db").exists()

    serve = containers["mlflow"]
    with Container(image, command=serve["command"], env=_env(serve), data_dir=data) as c:
        report = None
        for _ in range(120):
            done = c.exec(["python3", "-c", PROBE])
            if done.returncode == 0:
                report = json.loads(done.stdout)
                break
            if c.state() != "running":
                break
            time.sleep(1)
        assert report is not None, f"the server never answered; its output:\n{c.output()[-3000:]}"
        checked = c.exec([ENTRYPOINT, "check"])
    assert report["health"] == [200, "OK"]
    assert report["experiment"]["experiment_id"]
    # `kubectl port-forward` to any local port is accepted; a foreign Host header (DNS rebinding) is not
    assert report["hosts"] == {"localhost:8080": 200, "127.0.0.1:31000": 200, "rebind.example.com": 403}, report
    assert report["root"] == "Read-only file system"
    assert report["uid"] == [str(RUN_AS)] * 4
    assert report["capeff"] == "0" * 16
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["ok"] is True
