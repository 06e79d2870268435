"""The platform-team examples: examples/classes/ (a class for AWS with IRSA, one for on-premises
PostgreSQL + MinIO, a team's server naming a class) and the Argo CD ApplicationSet."""
from __future__ import annotations

import io

import pytest
import yaml
from mlflow_operator.api import load_trackingserverclass
from mlflow_operator.cli import main

from tests.unit.helpers import EXAMPLES

CLASSES = EXAMPLES / "classes"


def render_team(tmp_path, class_file: str) -> list[dict]:
    cls = yaml.safe_load((CLASSES / class_file).read_text())
    team = yaml.safe_load((CLASSES / "team-server.yaml").read_text())
    team["spec"]["className"] = cls["metadata"]["name"]
    (tmp_path / "team.yaml").write_text(yaml.safe_dump(team))
    out, err = io.StringIO(), io.StringIO()
    code = main(["render", "-f", str(tmp_path / "team.yaml"), "--class", str(CLASSES / class_file)], out=out, err=err)
    assert code == 0, err.getvalue()
    return [d for d in yaml.safe_load_all(out.getvalue()) if d]


@pytest.mark.parametrize("class_file", ["aws-irsa.yaml", "on-premises.yaml"])
def test_class_examples_load(class_file):
    load_trackingserverclass(yaml.safe_load((CLASSES / class_file).read_text()))


def test_a_team_of_the_aws_class_gets_its_prefix_role_host_and_policies(tmp_path):
    manifests = render_team(tmp_path, "aws-irsa.yaml")
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "Ingress", "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount"} <= kinds
    account = next(m for m in manifests if m["kind"] == "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/mlflow-team-fraud-mlflow"
    ingress = next(m for m in manifests if m["kind"] == "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "mlflow.team-fraud.mlflow.example.com"
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"] == "s3://ml-artifacts/team-fraud/mlflow"
    assert "AWS_ACCESS_KEY_ID" not in env  # IRSA: no keys
    assert deployment["spec"]["replicas"] == 2


def test_a_team_of_the_on_premises_class_gets_its_prefix_on_minio(tmp_path):
    manifests = render_team(tmp_path, "on-premises.yaml")
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"]["value"] == "s3://mlflow/team-fraud/mlflow"
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://minio.storage.svc:9000"
    # The keys and URIs the operator provisions: <name>-s3 and <name>-database, for the server mlflow.
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-s3", "key": "access-key-id"}
    assert env["MLFLOW_OPERATOR_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-database", "key": "uri"}
    ingress = next(m for m in manifests if m["kind"] == "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "mlflow-team-fraud.mlflow.corp.example"


def test_the_applicationset_gives_each_team_folder_its_server():
    appset = yaml.safe_load((EXAMPLES / "argocd" / "applicationset.yaml").read_text())
    assert appset["kind"] == "ApplicationSet"
    assert appset["spec"]["generators"][0]["git"]["directories"] == [{"path": "teams/*"}]
    template = appset["spec"]["template"]
    assert template["spec"]["source"]["path"] == "{{path}}"
    assert template["spec"]["destination"]["namespace"] == "ml-{{path.basename}}"
    assert "CreateNamespace=true" in template["spec"]["syncPolicy"]["syncOptions"]
