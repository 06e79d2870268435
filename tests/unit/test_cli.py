"""The `mlflow-operator` command: render and crd (`run`, the operator, is tested with the controller)."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest
import yaml
from mlflow_operator.cli import main
from mlflow_operator.constants import CRD_FILENAME
from mlflow_operator.crd import all_crds_yaml, class_crd_yaml, crd_yaml
from mlflow_operator.render import render

from .helpers import EXAMPLES, REPO, example_files, make


def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, stdin=io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_render_prints_the_manifests_of_each_example(path):
    code, out, err = run("render", "-f", str(path))
    assert code == 0, err
    documents = list(yaml.safe_load_all(out))
    assert documents == render(yaml.safe_load(path.read_text()))
    assert out.startswith("---\n# Source: TrackingServer ")


def test_render_output_is_byte_for_byte_stable():
    path = str(EXAMPLES / "07-split.yaml")
    assert run("render", "-f", path)[1] == run("render", "-f", path)[1]


def test_render_notes_generated_secrets_on_stderr():
    code, out, err = run("render", "-f", str(EXAMPLES / "08-team.yaml"))
    assert code == 0
    assert "Secret fraud-admin" in err and "kind: Secret" not in out


def test_invalid_file_exits_1_naming_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(make({"replicas": 3, "artifacts": {"destination": "ftp://x/y"}})))
    code, out, err = run("render", "-f", str(bad))
    assert code == 1 and out == ""
    assert "TrackingServer 'team' is invalid" in err
    assert "spec.replicas: replicas must be at most 1 with an embedded backend store" in err
    assert "spec.artifacts.destination: artifacts.destination must be" in err


def test_schema_error_names_the_field():
    obj = make({"backendStore": {"type": "Database", "uri": {"secretKeyRef": {"name": "db"}}}})
    code, _, err = run("render", "-f", "-", stdin=yaml.safe_dump(obj))
    assert code == 1
    assert "spec.backendStore.uri.secretKeyRef.key: Required value" in err


@pytest.mark.parametrize(
    "content, message",
    [
        ("spec: [unclosed", "invalid YAML"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "no TrackingServer found"),
        ("apiVersion: mlflow-operator.dev/v2\nkind: TrackingServer\nmetadata: {name: x}\n", "apiVersion: expected"),
        ("", "no TrackingServer found"),
    ],
)
def test_unusable_input_exits_1(content, message):
    code, _, err = run("render", "-f", "-", stdin=content)
    assert code == 1 and message in err


def test_missing_file_exits_1(tmp_path):
    code, _, err = run("render", "-f", str(tmp_path / "nope.yaml"))
    assert code == 1 and "cannot read" in err


def test_namespace_option_fills_a_missing_namespace():
    obj = make({})
    del obj["metadata"]["namespace"]
    code, out, _ = run("render", "-f", "-", "-n", "team-b", stdin=yaml.safe_dump(obj))
    assert code == 0
    assert {d["metadata"]["namespace"] for d in yaml.safe_load_all(out)} == {"team-b"}
    code, _, err = run("render", "-f", "-", "-n", "other", stdin=yaml.safe_dump(make({})))
    assert code == 1 and "metadata.namespace" in err


def test_render_skips_other_kinds_and_renders_every_trackingserver():
    stream = yaml.safe_dump_all([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
                                 make({}, name="one"), make({}, name="two")])
    code, out, err = run("render", "-f", "-", stdin=stream)
    assert code == 0 and "skipping a Secret" in err
    assert {d["metadata"]["name"] for d in yaml.safe_load_all(out) if d["kind"] == "Deployment"} == {"one", "two"}


def test_crd_prints_and_writes(tmp_path):
    code, out, _ = run("crd")
    assert code == 0 and out == all_crds_yaml()
    code, _, err = run("crd", "--output", str(tmp_path / "crds"))
    assert code == 0 and (tmp_path / "crds" / CRD_FILENAME).read_text() == crd_yaml()
    assert (tmp_path / "crds" / "trackingserverclasses.mlflow-operator.dev.yaml").read_text() == class_crd_yaml()


def test_console_script_exit_code():
    """The installed command, as users run it."""
    command = _command()
    bad = subprocess.run(command + ["render", "-f", "-"], input=yaml.safe_dump(make({"replicas": 2})),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "spec.replicas:" in bad.stderr
    good = subprocess.run(command + ["render", "-f", str(EXAMPLES / "02-sqlite.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0 and "kind: Deployment" in good.stdout


def test_output_quotes_strings_kubectl_would_read_as_booleans():
    """kubectl's YAML reader takes a bare y/n for a boolean; a Secret key named "y" must stay a string."""
    obj = make({"podTemplate": {"extraEnv": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "y"}}},
                                             {"name": "N", "value": "n"}]}})
    code, out, _ = run("render", "-f", "-", stdin=yaml.safe_dump(obj))
    assert code == 0
    assert "key: 'y'" in out and "value: 'n'" in out
    assert render(obj) == [d for d in yaml.safe_load_all(out)]


def _command() -> list[str]:
    script = REPO / ".venv" / "bin" / "mlflow-operator"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlflow_operator.cli"]


def test_a_reader_that_goes_away_is_not_a_traceback():
    """`render ... | head`: the pipe closes before the output is written."""
    proc = subprocess.Popen(_command() + ["render", "-f", str(EXAMPLES)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # nothing is read: the first write meets a closed pipe
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141  # as a shell reports a command ended by SIGPIPE


def test_a_directory_renders_every_manifest_file_in_it_like_kubectl(tmp_path):
    code, out, err = run("render", "-f", str(EXAMPLES))
    assert code == 0, err
    expected = [d for path in sorted(EXAMPLES.glob("*.yaml")) for d in render(yaml.safe_load(path.read_text()))]
    assert list(yaml.safe_load_all(out)) == expected
    # subdirectories only with -R, where files without a TrackingServer are skipped with a note
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "server.yml").write_text(yaml.safe_dump(make({}, name="nested")))
    (tmp_path / "notes.txt").write_text("not a manifest")
    code, _, err = run("render", "-f", str(tmp_path))
    assert code == 1 and "no .yaml, .yml, .json files" in err
    code, out, err = run("render", "-R", "-f", str(tmp_path), "-f", str(EXAMPLES / "argocd"))
    assert code == 0, err
    assert "skipping an Application (not a TrackingServer)" in err and "skipping a ConfigMap" in err
    assert {d["metadata"]["name"] for d in yaml.safe_load_all(out) if d["kind"] == "Deployment"} == {"nested"}


def test_an_error_in_one_file_prints_nothing_and_names_each_bad_file(tmp_path):
    (tmp_path / "a-good.yaml").write_text(yaml.safe_dump(make({})))
    (tmp_path / "b-bad.yaml").write_text(yaml.safe_dump(make({"replicas": 2})))
    (tmp_path / "c-broken.yaml").write_text("spec: [unclosed\n")
    code, out, err = run("render", "-f", str(tmp_path))
    assert code == 1 and out == ""
    assert f"{tmp_path / 'b-bad.yaml'}: TrackingServer 'team' is invalid" in err
    assert f"{tmp_path / 'c-broken.yaml'}:2:1: invalid YAML" in err


def test_an_enum_error_echoes_the_bad_value():
    code, _, err = run("render", "-f", "-", stdin=yaml.safe_dump(make({"artifacts": {"mode": "Proxie"}})))
    assert code == 1
    # in the API server's words for the same refusal
    assert 'spec.artifacts.mode: Unsupported value: "Proxie": supported values: "Proxied", "Direct", "Split", "ArtifactsOnly"' in err


def test_a_yaml_error_names_the_file_line_and_column(tmp_path):
    bad = tmp_path / "server.yaml"
    bad.write_text("apiVersion: mlflow-operator.dev/v1alpha1\nkind: TrackingServer\nmetadata:\n  name: x\n"
                   "spec:\n  replicas: 1\n   workers: 2\n")
    code, _, err = run("render", "-f", str(bad))
    assert code == 1 and "<unicode string>" not in err
    assert err.startswith(f"error: {bad}:7:11: invalid YAML: mapping values are not allowed here"), err


def test_a_missing_namespace_is_said_to_become_default():
    obj = make({})
    del obj["metadata"]["namespace"]
    code, out, err = run("render", "-f", "-", stdin=yaml.safe_dump(obj))
    assert code == 0
    assert "TrackingServer 'team' names no namespace; rendered in namespace 'default'" in err
    assert {d["metadata"]["namespace"] for d in yaml.safe_load_all(out)} == {"default"}
    assert "names no namespace" not in run("render", "-f", "-", stdin=yaml.safe_dump(make({})))[2]


def test_render_takes_the_operators_default_image_and_cluster_domain():
    code, out, err = run("render", "-f", str(EXAMPLES / "02-sqlite.yaml"), "--default-image", "mirror.corp/mlflow:3.18.0",
                         "--cluster-domain", "corp.internal")
    assert code == 0, err
    deploy = next(d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment")
    server = deploy["spec"]["template"]["spec"]["containers"][0]
    assert server["image"] == "mirror.corp/mlflow:3.18.0"
    hosts = next(e["value"] for e in server["env"] if e["name"] == "MLFLOW_OPERATOR_ALLOWED_HOSTS").split(",")
    assert "quickstart.ml-sandbox.svc.corp.internal" in hosts
