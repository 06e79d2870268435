"""Per-server MinIO users, each with a policy that allows its own prefix only.

Calls MinIO's admin API through the `minio` package's MinioAdmin (signed requests, the add-user
body encrypted as MinIO requires), so no `mc` binary is needed. The user's name is short (at most
20 characters, the access key length every MinIO release accepts) and derived from namespace/name;
the policy's name is readable. The policy allows objects under <prefix>/ and listing with that
prefix, in the destination's bucket, and nothing else: MinIO refuses that user's requests for
another team's prefix.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_POLICY = 128
ACCESS_KEY_DIGEST = 13  # "mlflow-" + 13 hex digits: 20 characters
OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                  "s3:ListMultipartUploadParts"]
TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Place:
    bucket: str
    prefix: str  # without leading or trailing '/'

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/"


def place(destination: str) -> Place:
    """s3://bucket/some/prefix -> Place('bucket', 'some/prefix')."""
    parts = urlsplit(destination)
    return Place(parts.netloc, parts.path.strip("/"))


def _digest(namespace: str, name: str) -> str:
    return hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()


def names(namespace: str, name: str) -> tuple[str, str]:
    """(user, policy)."""
    digest = _digest(namespace, name)
    user = "mlflow-" + digest[:ACCESS_KEY_DIGEST]
    readable = re.sub(r"[^a-z0-9-]+", "-", f"{namespace}-{name}".lower()).strip("-")
    tail = "-" + digest[:8]
    return user, "mlflow-" + readable[: MAX_POLICY - len("mlflow-") - len(tail)] + tail


def policy(where: Place) -> dict:
    """Objects under the prefix, and listing only with that prefix."""
    bucket = f"arn:aws:s3:::{where.bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": OBJECT_ACTIONS, "Resource": [f"{bucket}/{where.prefix}/*"]},
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [bucket],
             "Condition": {"StringLike": {"s3:prefix": [where.prefix, f"{where.prefix}/*"]}}},
            {"Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": [bucket]},
        ],
    }


def _endpoint(endpoint_url: str) -> tuple[str, bool]:
    parts = urlsplit(endpoint_url)
    return parts.netloc, parts.scheme == "https"


def _http():
    import urllib3

    # Short timeouts and one retry: a MinIO that is down is a condition in seconds, not a hung pass.
    return urllib3.PoolManager(timeout=urllib3.Timeout(connect=TIMEOUT_SECONDS, read=30),
                               retries=urllib3.Retry(total=1, backoff_factor=0.2))


def _admin(endpoint_url: str, access_key: str, secret_key: str, region: str | None):
    from minio import MinioAdmin
    from minio.credentials import StaticProvider

    host, secure = _endpoint(endpoint_url)
    return MinioAdmin(endpoint=host, credentials=StaticProvider(access_key, secret_key), region=region or "",
                      secure=secure, http_client=_http())


def _s3(endpoint_url: str, access_key: str, secret_key: str, region: str | None):
    from minio import Minio

    host, secure = _endpoint(endpoint_url)
    return Minio(host, access_key=access_key, secret_key=secret_key, region=region or None, secure=secure,
                 http_client=_http())


class BucketMissing(Exception):
    pass


def provision(endpoint_url: str, admin_keys: tuple[str, str], region: str | None, user: str, policy_name: str,
              where: Place, secret_key: str) -> None:
    """The user exists with this secret key (a new one: the old Secret is lost when this runs) and
    the prefix's policy attached. Idempotent."""
    admin = _admin(endpoint_url, *admin_keys, region)
    admin.policy_add(policy_name, policy=policy(where))  # first: wrong admin keys get MinIO's own words
    if not _s3(endpoint_url, *admin_keys, region).bucket_exists(where.bucket):
        raise BucketMissing(where.bucket)
    admin.user_add(user, secret_key)
    try:
        admin.attach_policy([policy_name], user=user)
    except Exception as exc:  # noqa: BLE001 - MinIO refuses to attach what is attached already
        if "already" not in str(exc).lower():
            raise


def drop(endpoint_url: str, admin_keys: tuple[str, str], region: str | None, user: str, policy_name: str,
         where: Place) -> int:
    """Removes the user, its policy and every object under the prefix (retentionPolicy Delete).
    Idempotent; returns how many objects were deleted."""
    from minio.deleteobjects import DeleteObject

    admin = _admin(endpoint_url, *admin_keys, region)
    for remove, name in ((admin.user_remove, user), (admin.policy_remove, policy_name)):
        try:
            remove(name)
        except Exception as exc:  # noqa: BLE001 - gone already is done
            if not re.search(r"does not exist|not found|NoSuch", str(exc), re.IGNORECASE):
                raise
    s3 = _s3(endpoint_url, *admin_keys, region)
    if not s3.bucket_exists(where.bucket):
        return 0
    objects = [DeleteObject(o.object_name) for o in s3.list_objects(where.bucket, prefix=where.prefix + "/", recursive=True)]
    errors = list(s3.remove_objects(where.bucket, objects)) if objects else []
    if errors:
        raise RuntimeError(f"{len(errors)} objects under {where.uri} could not be deleted: {errors[0]}")
    return len(objects)
