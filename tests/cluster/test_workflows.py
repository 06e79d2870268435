"""The forge's workflows and the dependency-bump config cannot run here: they are checked statically.
actionlint (built from its Go module at a pinned version, hack/devtools) reads every workflow; the
Renovate patterns must still find MLflow's version in each file that writes it."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import devtools
from mlflow_operator.constants import MLFLOW_VERSION

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"


@pytest.fixture(scope="module")
def actionlint() -> Path:
    return devtools.ensure(devtools.ACTIONLINT)


def lint(actionlint: Path, *files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(actionlint), "-no-color", *map(str, files)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_every_workflow_passes_actionlint(actionlint):
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    assert {f.name for f in files} >= {"ci.yml", "release.yml", "mlflow-bump.yml"}
    proc = lint(actionlint, *files)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


def test_actionlint_reports_a_broken_workflow(actionlint, tmp_path):
    """The check above can fail: a wrong expression and an unknown runner input are findings."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(yaml.safe_dump({
        "on": {"push": {}}, "jobs": {"x": {"runs-on": "ubuntu-24.04", "steps": [
            {"run": "echo ${{ github.no_such_context_value.x }}"},
            {"uses": "actions/checkout@v4", "with": {"no-such-input": "1"}},
            {"run": "cp $1 /tmp"},
        ]}},
    }))
    proc = lint(actionlint, broken)
    assert proc.returncode == 1 and "no-such-input" in proc.stdout, proc.stdout + proc.stderr
    if shutil.which("shellcheck"):  # hack/system-deps installs it; then run: scripts are checked too
        assert "SC2086" in proc.stdout, proc.stdout


def test_release_builds_both_dockerfiles_for_two_platforms_signed_with_sboms():
    release = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    images = release["jobs"]["images"]
    matrix = images["strategy"]["matrix"]["include"]
    assert {m["image"] for m in matrix} == {"mlflow-operator", "mlflow-server"}
    for m in matrix:
        assert (REPO / m["dockerfile"]).is_file() and (REPO / m["context"]).is_dir(), m
    build = next(s for s in images["steps"] if str(s.get("uses", "")).startswith("docker/build-push-action"))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64" and build["with"]["sbom"] is True
    runs = "\n".join(s.get("run", "") for job in release["jobs"].values() for s in job["steps"])
    assert "cosign sign --yes --recursive" in runs and "cosign attest" in runs
    assert 'helm push "dist/mlflow-operator-$VERSION.tgz" "oci://$REGISTRY/$OWNER/charts"' in runs
    assert release["env"]["REGISTRY"] == "ghcr.io"


def test_renovate_finds_the_mlflow_version_everywhere_it_is_written():
    config = json.loads((REPO / ".github" / "renovate.json").read_text())
    found: dict[str, str] = {}
    for manager in config["customManagers"]:
        patterns = [re.compile(p.replace("(?<", "(?P<")) for p in manager["matchStrings"]]
        files = [f for f in REPO.rglob("*") if f.is_file() and ".git" not in f.parts and ".venv" not in f.parts
                 and any(re.search(m, f.relative_to(REPO).as_posix()) for m in manager["fileMatch"])]
        assert files, f"{manager['description']}: no file matches {manager['fileMatch']}"
        for f in files:
            hits = [m.group("currentValue") for p in patterns for m in p.finditer(f.read_text())]
            assert hits, f"{manager['description']}: no pattern matches in {f.relative_to(REPO)}"
            found[f"{f.relative_to(REPO)}:{manager['depNameTemplate']}"] = hits[0]
    mlflow = {k: v for k, v in found.items() if k.endswith(":mlflow")}
    assert set(mlflow) == {"operator/mlflow_operator/constants.py:mlflow", "server-image/Dockerfile:mlflow"}
    assert set(mlflow.values()) == {MLFLOW_VERSION}
    # the pip manager reads the pins themselves
    pip_files = config["pip_requirements"]["fileMatch"]
    for path in ("server-image/requirements.in", "hack/testservices/client-requirements.in"):
        assert any(re.search(m, path) for m in pip_files), path
        assert f"mlflow=={MLFLOW_VERSION}" in (REPO / path).read_text().splitlines()
    assert found["hack/devtools/__init__.py:github.com/rhysd/actionlint"] == devtools.ACTIONLINT[2]
