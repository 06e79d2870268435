"""A TrackingServerClass with `artifacts.minio` on the real control plane and a real MinIO (the
operator runs as a host process and calls MinIO's admin API on loopback): each team's server gets
its own MinIO user whose policy allows its own prefix only, its keys written once into the team's
namespace; team A's keys write and read under team A's prefix and are refused by MinIO under team
B's; a missing admin Secret, a MinIO that is down, wrong admin keys and a bucket that does not
exist give a condition with the reason (never a key), and fixing them recovers; no key appears in status, events or the log."""
from __future__ import annotations

import base64
import json
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.operator_fixtures import OPERATOR_NAMESPACE, apply_object, condition, free_port, get_json, wait_for, wait_for_conditions


def minio_admin_secret(name: str, access_key: str, secret_key: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
            "stringData": {"access-key-id": access_key, "secret-access-key": secret_key}}


def minio_class(name: str, admin: str, bucket: str, endpoint: str, region: str) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServerClass", "metadata": {"name": name},
            "spec": {"defaults": {"artifacts": {"mode": "Proxied"}}, "enforced": ["artifacts"],
                     "artifacts": {"destinationTemplate": f"s3://{bucket}/{{namespace}}/{{name}}",
                                   "minio": {"endpointUrl": endpoint, "region": region, "adminSecretRef": {"name": admin}}}}}


def server(namespace: str, class_name: str) -> dict:
    return {"apiVersion": "mlflow-operator.dev/v1alpha1", "kind": "TrackingServer",
            "metadata": {"name": "team", "namespace": namespace}, "spec": {"className": class_name}}


def team_keys(cluster, namespace: str) -> tuple[str, str]:
    data = get_json(cluster, "secret", "team-s3", "-n", namespace)["data"]
    return base64.b64decode(data["access-key-id"]).decode(), base64.b64decode(data["secret-access-key"]).decode()


def s3_as(s3, keys: tuple[str, str]):
    return boto3.client("s3", endpoint_url=s3.endpoint, region_name=s3.region, aws_access_key_id=keys[0],
                        aws_secret_access_key=keys[1], config=Config(retries={"max_attempts": 1}))


def artifacts_condition(cluster, namespace: str, reason: str, timeout: float = 90) -> dict:
    def probe():
        live = get_json(cluster, "trackingserver", "team", "-n", namespace)
        found = condition(live, "ArtifactsProvisioned")
        return found if found.get("reason") == reason else None
    return wait_for(f"ArtifactsProvisioned {reason}", probe, timeout=timeout)


@pytest.fixture
def setup(cluster, namespace, s3):
    suffix = namespace[-6:]
    other = f"team-b-{suffix}"
    cluster.kubectl("create", "namespace", other)
    names = {"class": f"minio-{suffix}", "admin": f"minio-admin-{suffix}", "other": other,
             "bucket": s3.create_bucket("teams-" + uuid.uuid4().hex[:8])}
    yield names
    for kind, name, ns in (("trackingserverclass", names["class"], None), ("secret", names["admin"], OPERATOR_NAMESPACE)):
        cluster.kubectl("delete", kind, name, "--ignore-not-found", *(("-n", ns) if ns else ()), check=False)
    cluster.kubectl("delete", "namespace", other, "--wait=false", "--ignore-not-found", check=False)


def test_each_team_gets_a_minio_user_limited_to_its_prefix(cluster, operator, namespace, s3, setup):
    other, bucket = setup["other"], setup["bucket"]
    # MinIO down (nothing listens on the class's endpoint) and no admin Secret yet.
    down = f"http://127.0.0.1:{free_port()}"
    apply_object(cluster, minio_class(setup["class"], setup["admin"], bucket, down, s3.region))
    apply_object(cluster, server(namespace, setup["class"]))
    found = artifacts_condition(cluster, namespace, "AdminSecretNotFound")
    assert setup["admin"] in found["message"]
    assert get_json(cluster, "deployment", "team", "-n", namespace) is None
    # Each step below leaves provisioning impossible until the last one, so no pass can succeed early.
    apply_object(cluster, minio_admin_secret(setup["admin"], s3.access_key, "not-the-secret-key"))
    found = artifacts_condition(cluster, namespace, "ProvisioningFailed")
    assert down in found["message"]
    # MinIO up, wrong admin secret key: MinIO's refusal, without the key.
    apply_object(cluster, minio_class(setup["class"], setup["admin"], bucket, s3.endpoint, s3.region))
    found = wait_for("MinIO's refusal", lambda: (lambda c: c if s3.endpoint in c.get("message", "") else None)(
        condition(get_json(cluster, "trackingserver", "team", "-n", namespace), "ArtifactsProvisioned")), timeout=90)
    assert found["reason"] == "ProvisioningFailed" and "signature" in found["message"].lower(), found
    assert "not-the-secret-key" not in found["message"]
    # Right keys, but the class names a bucket that does not exist: said so, nothing made.
    apply_object(cluster, minio_class(setup["class"], setup["admin"], bucket + "-missing", s3.endpoint, s3.region))
    apply_object(cluster, minio_admin_secret(setup["admin"], s3.access_key, s3.secret_key))
    found = artifacts_condition(cluster, namespace, "BucketNotFound")
    assert f"the bucket {bucket}-missing" in found["message"]
    # Fixed: both teams converge, each with its own user.
    apply_object(cluster, minio_class(setup["class"], setup["admin"], bucket, s3.endpoint, s3.region))
    apply_object(cluster, server(other, setup["class"]))
    for ns in (namespace, other):
        live = wait_for_conditions(cluster, ns, "team", timeout=180, op=operator, Ready="True", ArtifactsProvisioned="True")
        assert f"s3://{bucket}/{ns}/team/" in live["status"]["artifacts"]
        env = {e["name"]: e for e in get_json(cluster, "deployment", "team", "-n", ns)["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "team-s3", "key": "access-key-id"}
    a_keys, b_keys = team_keys(cluster, namespace), team_keys(cluster, other)
    assert a_keys[0] != b_keys[0]
    a, b = s3_as(s3, a_keys), s3_as(s3, b_keys)
    # Each team writes and reads its own prefix.
    a.put_object(Bucket=bucket, Key=f"{namespace}/team/1/model.pkl", Body=b"team a")
    b.put_object(Bucket=bucket, Key=f"{other}/team/1/model.pkl", Body=b"team b")
    assert a.get_object(Bucket=bucket, Key=f"{namespace}/team/1/model.pkl")["Body"].read() == b"team a"
    listed = a.list_objects_v2(Bucket=bucket, Prefix=f"{namespace}/team/")
    assert [o["Key"] for o in listed["Contents"]] == [f"{namespace}/team/1/model.pkl"]
    # Team A under team B's prefix, or the bucket as a whole: refused by MinIO.
    for attempt in (lambda: a.get_object(Bucket=bucket, Key=f"{other}/team/1/model.pkl"),
                    lambda: a.put_object(Bucket=bucket, Key=f"{other}/team/1/evil", Body=b"x"),
                    lambda: a.delete_object(Bucket=bucket, Key=f"{other}/team/1/model.pkl"),
                    lambda: a.list_objects_v2(Bucket=bucket, Prefix=f"{other}/team/"),
                    lambda: a.list_objects_v2(Bucket=bucket),
                    # a prefix that only starts like A's: "<namespace>/team-2" is not "<namespace>/team/"
                    lambda: a.put_object(Bucket=bucket, Key=f"{namespace}/team-2/x", Body=b"x")):
        with pytest.raises(ClientError) as refused:
            attempt()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert b.get_object(Bucket=bucket, Key=f"{other}/team/1/model.pkl")["Body"].read() == b"team b"
    # No admin key in the team namespaces; no key in status, events or the operator's log.
    keys = [s3.secret_key, a_keys[1], b_keys[1]]
    for ns in (namespace, other):
        for item in (get_json(cluster, "secrets", "-n", ns) or {}).get("items", []):
            for value in (item.get("data") or {}).values():
                assert s3.secret_key not in base64.b64decode(value).decode(errors="replace")
        said = json.dumps([get_json(cluster, "trackingserver", "team", "-n", ns)["status"],
                           get_json(cluster, "events", "-n", ns)["items"]])
        assert all(k not in said for k in keys)
    log = operator.log_path.read_text(errors="replace")
    assert all(k not in log for k in keys)
