"""Kubernetes identities for the tracking server (``MLFLOW_OPERATOR_AUTH=kubernetes``).

An ASGI layer around the app MLflow serves. A client sends a ServiceAccount token as bearer token
(the stock client does that with ``MLFLOW_TRACKING_TOKEN``). For each request:

1. the token is checked by a TokenReview with the server's audience
   (``MLFLOW_OPERATOR_KUBERNETES_AUDIENCE``): a token issued for another audience, expired, or of
   a deleted ServiceAccount or pod gets 401, as does a request without a bearer token;
2. the request is authorized by a SubjectAccessReview of that user on the subresource
   ``trackingservers/api`` named after this TrackingServer, in its namespace, with the verb the
   MLflow action maps to (``verb_for``): 403 when RBAC says no.

So ``kubectl create rolebinding`` grants a team access. The subresource is no API of its own: a
grant on it lets a client use the MLflow server and nothing else (a grant on ``trackingservers``
itself would also let it edit the TrackingServer's spec, and the aggregated ``view``/``edit``
roles grant that).

The API server is asked with the pod's own token (``system:auth-delegator`` bound by the
operator), through the standard in-cluster files. Answers are kept for ``CACHE_SECONDS`` per
token and per (user, verb), so a burst of requests costs two reviews; a ServiceAccount deleted or a
RoleBinding removed takes effect within that time. When the API server cannot be asked, the
request gets 503: never let through unchecked. ``/health`` (the kubelet's probes) needs no token.
Tokens are never logged; a log line names the user and the verb.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

# The workers log through uvicorn's logger (as asgi does): it is the one configured there.
log = logging.getLogger("uvicorn.error")

GROUP = "mlflow-operator.dev"
RESOURCE = "trackingservers"
SUBRESOURCE = "api"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CACHE_SECONDS = 10.0
CACHE_ENTRIES = 4096
REVIEW_TIMEOUT_SECONDS = 5.0
# The kubelet's probes carry no token.
EXEMPT_PATHS = frozenset({"/health"})

# ---- which verb an MLflow request needs ----------------------------------------------------------

_LISTING_ARTIFACTS = re.compile(r"/mlflow-artifacts/artifacts/?$")


def _words(path: str) -> list[str]:
    last = path.rstrip("/").rsplit("/", 1)[-1].lower()
    return re.split(r"[-_]", last)


def verb_for(method: str, path: str) -> str:
    """The RBAC verb an MLflow request needs on trackingservers/api.

    Reads: ``get`` (GET and HEAD, and POST endpoints named ``get...``, GraphQL queries), ``list``
    (``search``/``list`` endpoints, an artifact directory's listing). Writes: ``create``
    (``create...`` and ``log...`` endpoints, artifact uploads), ``delete`` (DELETE, and ``delete...``
    endpoints), ``update`` (every other write: update, rename, set-tag, restore, ...).
    """
    method = method.upper()
    words = _words(path)
    if method == "DELETE":
        return "delete"
    if method in ("GET", "HEAD", "OPTIONS"):
        if "search" in words or "list" in words or _LISTING_ARTIFACTS.search(path):
            return "list"
        return "get"
    if "search" in words or "list" in words:
        return "list"
    if "get" in words or words == ["graphql"]:
        return "get"
    if "delete" in words:
        return "delete"
    if "create" in words or words[0] == "log" or (method == "PUT" and "/mlflow-artifacts/artifacts/" in path):
        return "create"
    return "update"


# ---- the API server ------------------------------------------------------------------------------

class ApiUnreachable(Exception):
    pass


@dataclass(frozen=True)
class User:
    username: str
    uid: str
    groups: tuple[str, ...]
    extra: tuple[tuple[str, tuple[str, ...]], ...]


class ApiServer:
    """POSTs reviews to the API server with the pod's (rotating) token."""

    def __init__(self, directory: str = SERVICE_ACCOUNT_DIR, url: str | None = None):
        self.directory = directory
        if url is None:
            host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        self.url = url
        self._ssl: ssl.SSLContext | None = None
        self._token: tuple[float, str] | None = None

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=os.path.join(self.directory, "ca.crt"))
        return self._ssl

    def _bearer(self) -> str:
        # The kubelet rewrites the file before the token expires: read it again every minute.
        now = time.monotonic()
        if self._token is None or now - self._token[0] > 60:
            with open(os.path.join(self.directory, "token")) as f:
                self._token = (now, f.read().strip())
        return self._token[1]

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     "Authorization": f"Bearer {self._bearer()}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=REVIEW_TIMEOUT_SECONDS, context=self._context()) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            raise ApiUnreachable(f"{path}: HTTP {exc.code} {exc.read()[:300]!r}") from None
        except (OSError, ValueError) as exc:
            raise ApiUnreachable(f"{path}: {exc}") from None


class TtlCache:
    def __init__(self, seconds: float = CACHE_SECONDS, entries: int = CACHE_ENTRIES):
        self.seconds, self.entries = seconds, entries
        self._data: dict = {}
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            hit = self._data.get(key)
            if hit is None or hit[0] < time.monotonic():
                return None
            return hit

    def put(self, key, value) -> None:
        with self._lock:
            if len(self._data) >= self.entries:
                self._data.clear()  # bounded: an attacker's stream of tokens costs reviews, not memory
            self._data[key] = (time.monotonic() + self.seconds, value)


class Reviewer:
    def __init__(self, api: ApiServer, audience: str, namespace: str, name: str):
        self.api, self.audience, self.namespace, self.name = api, audience, namespace, name
        self.tokens = TtlCache()
        self.decisions = TtlCache()

    def authenticate(self, token: str) -> User | None:
        key = hashlib.sha256(token.encode()).digest()
        hit = self.tokens.get(key)
        if hit is not None:
            return hit[1]
        answer = self.api.post("/apis/authentication.k8s.io/v1/tokenreviews", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        })
        status = answer.get("status") or {}
        user = None
        # The API server returns the audiences the token was valid for; require ours among them.
        if status.get("authenticated") and self.audience in (status.get("audiences") or []):
            info = status.get("user") or {}
            user = User(info.get("username", ""), info.get("uid", ""), tuple(info.get("groups") or ()),
                        tuple(sorted((k, tuple(v)) for k, v in (info.get("extra") or {}).items())))
        self.tokens.put(key, user)
        return user

    def allowed(self, user: User, verb: str) -> bool:
        key = (user, verb)
        hit = self.decisions.get(key)
        if hit is not None:
            return hit[1]
        answer = self.api.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {
                "user": user.username, "uid": user.uid, "groups": list(user.groups),
                "extra": {k: list(v) for k, v in user.extra},
                "resourceAttributes": {"namespace": self.namespace, "group": GROUP, "resource": RESOURCE,
                                       "subresource": SUBRESOURCE, "name": self.name, "verb": verb},
            },
        })
        allowed = bool((answer.get("status") or {}).get("allowed"))
        self.decisions.put(key, allowed)
        return allowed


# ---- the ASGI layer ------------------------------------------------------------------------------

def _bearer_token(headers) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


async def _answer(send, status: int, message: str, extra_headers=()) -> None:
    body = json.dumps({"error_code": "UNAUTHENTICATED" if status == 401 else
                       "PERMISSION_DENIED" if status == 403 else "TEMPORARILY_UNAVAILABLE",
                       "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra_headers]})
    await send({"type": "http.response.body", "body": body})


class KubernetesAuth:
    def __init__(self, app, reviewer: Reviewer):
        self.app, self.reviewer = app, reviewer
        self._challenge = [(b"www-authenticate", f'Bearer realm="{reviewer.audience}"'.encode())]

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # MLflow serves no websockets; none gets through unchecked
            return await send({"type": "websocket.close", "code": 1008})
        if scope["path"] in EXEMPT_PATHS:
            return await self.app(scope, receive, send)
        token = _bearer_token(scope.get("headers", ()))
        if token is None:
            return await _answer(send, 401, "a ServiceAccount token is required (Authorization: Bearer, "
                                 "MLFLOW_TRACKING_TOKEN)", self._challenge)
        verb = verb_for(scope["method"], scope["path"])
        try:
            user = await asyncio.to_thread(self.reviewer.authenticate, token)
            if user is None:
                return await _answer(send, 401, f"the token is not valid for audience {self.reviewer.audience}",
                                     self._challenge)
            if not await asyncio.to_thread(self.reviewer.allowed, user, verb):
                log.info("forbidden: %s may not %s trackingservers/api %s/%s (%s %s)", user.username, verb,
                         self.reviewer.namespace, self.reviewer.name, scope["method"], scope["path"])
                return await _answer(send, 403, f"{user.username} may not {verb} {RESOURCE}/{SUBRESOURCE} "
                                     f"{self.reviewer.name} in namespace {self.reviewer.namespace}")
        except ApiUnreachable as exc:
            log.warning("cannot check a request with the API server: %s", exc)
            return await _answer(send, 503, "the Kubernetes API server cannot be asked; try again")
        return await self.app(scope, receive, send)


def wrap(app, config: dict):
    reviewer = Reviewer(ApiServer(), config["audience"], config["namespace"], config["name"])
    log.info("Kubernetes auth on: TokenReview for audience %s, SubjectAccessReview on %s/%s %s/%s",
             reviewer.audience, RESOURCE, SUBRESOURCE, reviewer.namespace, reviewer.name)
    return KubernetesAuth(app, reviewer)
