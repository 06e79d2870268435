"""The examples are documented: every Secret an example reads is explained in its comments, and
the Argo CD example deploys a TrackingServer folder with server-side apply."""
from __future__ import annotations

import pytest
import yaml
from mlflow_operator.api import load_trackingserver
from mlflow_operator.render import render, required_generated_secrets
from mlflow_operator.render.pod import referenced_secrets

from .helpers import EXAMPLES, example_files, pod_templates

SCENARIOS = ["01-file-store.yaml", "02-sqlite.yaml", "03-local-artifacts.yaml", "04-remote-direct.yaml",
             "05-proxied.yaml", "06-artifacts-only.yaml", "07-split.yaml"]


def test_one_example_per_scenario_and_a_team_example():
    names = [p.name for p in example_files()]
    assert names[:7] == SCENARIOS
    assert "08-team.yaml" in names


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_every_secret_an_example_reads_is_documented_in_it(path):
    text = path.read_text()
    obj = yaml.safe_load(text)
    generated = {s.name for s in required_generated_secrets(load_trackingserver(obj))}
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for _, pod in pod_templates(render(obj)):
        for secret in set(referenced_secrets(pod)) - generated:
            assert f"create secret generic {secret}" in comments, f"{path.name}: Secret {secret} undocumented"
    for secret in generated:
        assert secret in comments, f"{path.name}: generated Secret {secret} undocumented"


def test_argocd_application_syncs_a_trackingserver_folder():
    app = yaml.safe_load((EXAMPLES / "argocd" / "application.yaml").read_text())
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert app["spec"]["source"]["path"] and app["spec"]["destination"]["namespace"] == "ml-forecast"
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
