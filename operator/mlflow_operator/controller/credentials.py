"""Where the operator finds the API server and its credentials, for its own requests and for Kopf's.

In a pod: the ServiceAccount (the API server at $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT,
as client-go's in-cluster config finds it, and the token file the kubelet rotates, re-read once a
minute). Elsewhere: the current context of $KUBECONFIG (its files in order, the first value of each
name winning, as kubectl merges them) or ~/.kube/config, with a client certificate, a token or a
token file, or a username and password. Paths in a kubeconfig are relative to that file; data
fields are written once to private files, because both TLS stacks read certificates from files.

Not supported: exec and auth-provider plugins (cloud CLIs that mint short-lived tokens). The
operator runs in the cluster on its ServiceAccount; to run it elsewhere against such a cluster,
give it a kubeconfig with a token (e.g. `kubectl create token`).

This is the operator's own loader, not the `kubernetes` package's: that package (and Kopf's import
of it when installed) cost the process about 14 MB of its memory for two functions.
"""
from __future__ import annotations

import base64
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0  # the kubelet rotates projected tokens well before they expire


class CredentialsError(Exception):
    """No usable API server or credentials: the message says what was looked at."""


@dataclass
class Credentials:
    server: str
    ca_file: str | None = None
    insecure: bool = False
    token: str | None = None
    token_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None
    namespace: str | None = None
    _read_at: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def bearer_token(self, fresh: bool = False) -> str | None:
        """The token, re-read from its file once a minute (a rotated ServiceAccount token), or now."""
        if not self.token_file:
            return self.token
        with self._lock:
            if fresh or self.token is None or time.monotonic() - self._read_at >= TOKEN_REREAD_SECONDS:
                self.token = Path(self.token_file).read_text().strip() or None
                self._read_at = time.monotonic()
            return self.token

    def headers(self) -> dict[str, str]:
        token = self.bearer_token()
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self.username is not None:
            basic = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
            return {"Authorization": f"Basic {basic}"}
        return {}


def load(environ: dict[str, str] | None = None, service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> Credentials:
    """In a pod, the ServiceAccount; elsewhere, $KUBECONFIG or ~/.kube/config (as kubectl does)."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token_file = service_account_dir / "token"
    if host and port and token_file.exists():
        ca = service_account_dir / "ca.crt"
        namespace = service_account_dir / "namespace"
        return Credentials(
            server=f"https://{_host_for_url(host)}:{port}", ca_file=str(ca) if ca.exists() else None,
            token_file=str(token_file), namespace=namespace.read_text().strip() if namespace.exists() else None)
    paths = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if not paths:
        default = Path(env.get("HOME") or os.path.expanduser("~")) / ".kube" / "config"
        if not default.exists():
            raise CredentialsError("not in a pod (no KUBERNETES_SERVICE_HOST and ServiceAccount token), "
                                   "$KUBECONFIG is not set and ~/.kube/config does not exist")
        paths = [str(default)]
    return from_kubeconfig([Path(os.path.expanduser(p)) for p in paths])


def from_kubeconfig(paths: list[Path]) -> Credentials:
    current: str | None = None
    found: dict[str, dict[str, tuple[Path, dict[str, Any]]]] = {"contexts": {}, "clusters": {}, "users": {}}
    for path in paths:
        if not path.exists():
            continue  # kubectl skips a missing file of $KUBECONFIG's list
        config = yaml.safe_load(path.read_text()) or {}
        current = current or config.get("current-context")
        for section, inner in (("contexts", "context"), ("clusters", "cluster"), ("users", "user")):
            for item in config.get(section) or []:
                found[section].setdefault(item["name"], (path.parent, item.get(inner) or {}))
    if not current:
        raise CredentialsError(f"no current-context in {', '.join(map(str, paths))}")
    if current not in found["contexts"]:
        raise CredentialsError(f"the current-context {current!r} is not a context of {', '.join(map(str, paths))}")
    try:
        _, context = found["contexts"][current]
        cluster_dir, cluster = found["clusters"][context["cluster"]]
        user_dir, user = found["users"][context["user"]] if context.get("user") else (Path("."), {})
    except KeyError as exc:
        raise CredentialsError(f"the kubeconfig's context {current!r} names {exc} which it does not define") from exc
    if "exec" in user or "auth-provider" in user:
        raise CredentialsError(
            f"the kubeconfig's user of context {current!r} uses an exec or auth-provider plugin, which the "
            "operator does not run: give it a token (kubectl create token), a token file or a client certificate")
    if not cluster.get("server"):
        raise CredentialsError(f"the kubeconfig's cluster of context {current!r} has no server")
    token_file = user.get("tokenFile")
    return Credentials(
        server=cluster["server"].rstrip("/"),
        ca_file=_file(cluster_dir, cluster.get("certificate-authority"), cluster.get("certificate-authority-data"), "ca"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=user.get("token"),
        token_file=str(user_dir / token_file) if token_file and not user.get("token") else None,
        cert_file=_file(user_dir, user.get("client-certificate"), user.get("client-certificate-data"), "cert"),
        key_file=_file(user_dir, user.get("client-key"), user.get("client-key-data"), "key"),
        username=user.get("username"), password=user.get("password"),
        namespace=context.get("namespace"),
    )


_private_dir: str | None = None


def _file(base: Path, path: str | None, data: str | None, label: str) -> str | None:
    """A kubeconfig's file field (relative to the kubeconfig) or its base64 data field, as a path."""
    global _private_dir
    if path:
        return str(base / os.path.expanduser(path))
    if not data:
        return None
    if _private_dir is None:
        _private_dir = tempfile.mkdtemp(prefix="mlflow-operator-credentials-")  # 0700
    fd, name = tempfile.mkstemp(prefix=f"{label}-", suffix=".pem", dir=_private_dir)  # 0600
    with os.fdopen(fd, "wb") as out:
        out.write(base64.b64decode(data))
    return name


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
