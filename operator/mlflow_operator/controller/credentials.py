"""Where the operator finds the API server and its credentials, for its own requests and for Kopf's.

In a pod: the ServiceAccount (the API server at $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT,
as client-go's in-cluster config finds it, and the token file the kubelet rotates, re-read once a
minute). Elsewhere: the current context of $KUBECONFIG (its files in order, the first value of each
name winning, as kubectl merges them) or ~/.kube/config, with a client certificate, a token or a
token file, or a username and password. Paths in a kubeconfig are relative to that file; data
fields are written once to private files, because both TLS stacks read certificates from files.

An exec plugin (the cloud CLIs that mint short-lived tokens: `aws eks get-token`,
`gke-gcloud-auth-plugin`, kubelogin) is run as kubectl runs it (client.authentication.k8s.io
ExecCredential, non-interactive) and again when its token expires. Not supported: the removed
auth-provider plugins, and a client certificate an exec plugin rotates (its first one is used).

This is the operator's own loader, not the `kubernetes` package's: that package (and Kopf's import
of it when installed) cost the process about 11 MB of its memory for two functions.
"""
from __future__ import annotations

import atexit
import base64
import datetime
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0  # the kubelet rotates projected tokens well before they expire
EXEC_TIMEOUT_SECONDS = 60.0  # a cloud CLI asking its metadata server or refreshing its own login
EXEC_EXPIRY_MARGIN_SECONDS = 30.0  # an exec plugin's token is renewed this long before it expires


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
    exec_plugin: dict[str, Any] | None = None  # a kubeconfig user's `exec`, its command resolved
    _expires_at: float | None = field(default=None, repr=False)  # the exec plugin's token's expiry
    _read_at: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def bearer_token(self, fresh: bool = False) -> str | None:
        """The token, re-read from its file once a minute (a rotated ServiceAccount token), or now."""
        if self.exec_plugin is not None:
            with self._lock:
                if fresh or self.token is None or (self._expires_at is not None and time.time() >= self._expires_at):
                    self._run_exec_plugin()
                return self.token
        if not self.token_file:
            return self.token
        with self._lock:
            if fresh or self.token is None or time.monotonic() - self._read_at >= TOKEN_REREAD_SECONDS:
                self.token = Path(self.token_file).read_text().strip() or None
                self._read_at = time.monotonic()
            return self.token

    def token_expiry(self) -> datetime.datetime | None:
        """When the exec plugin's token is renewed (None: a token that does not expire here)."""
        if self._expires_at is None:
            return None
        return datetime.datetime.fromtimestamp(self._expires_at, datetime.timezone.utc)

    def _run_exec_plugin(self) -> None:
        plugin = self.exec_plugin or {}
        api_version = plugin.get("apiVersion") or "client.authentication.k8s.io/v1"
        env = {**os.environ, **{e["name"]: e.get("value", "") for e in plugin.get("env") or []},
               "KUBERNETES_EXEC_INFO": json.dumps({"apiVersion": api_version, "kind": "ExecCredential",
                                                   "spec": {"interactive": False}})}
        command = [plugin["command"], *(plugin.get("args") or [])]
        try:
            done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=EXEC_TIMEOUT_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CredentialsError(f"the kubeconfig's exec plugin {command[0]!r} could not run: {exc}") from exc
        if done.returncode != 0:
            raise CredentialsError(f"the kubeconfig's exec plugin {command[0]!r} exited {done.returncode}: "
                                   f"{done.stderr.strip()[-500:]}")
        try:
            status = json.loads(done.stdout).get("status") or {}
        except ValueError as exc:
            raise CredentialsError(f"the kubeconfig's exec plugin {command[0]!r} printed no ExecCredential") from exc
        if status.get("clientCertificateData") and not self.cert_file:
            self.cert_file = _private_file(status["clientCertificateData"].encode(), "cert")
            self.key_file = _private_file(status["clientKeyData"].encode(), "key")
        self.token = status.get("token")
        expiry = status.get("expirationTimestamp")
        self._expires_at = (datetime.datetime.fromisoformat(expiry.replace("Z", "+00:00")).timestamp()
                            - EXEC_EXPIRY_MARGIN_SECONDS) if expiry else None

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
    if "auth-provider" in user:
        raise CredentialsError(
            f"the kubeconfig's user of context {current!r} uses an auth-provider plugin (removed from kubectl): "
            "use its exec plugin, a token (kubectl create token), a token file or a client certificate")
    plugin = dict(user["exec"]) if user.get("exec") else None
    if plugin is not None:
        if not plugin.get("command"):
            raise CredentialsError(f"the kubeconfig's exec plugin of context {current!r} names no command")
        if os.sep in plugin["command"] and not os.path.isabs(plugin["command"]):
            plugin["command"] = str(user_dir / plugin["command"])  # as kubectl: relative to the kubeconfig
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
        exec_plugin=plugin,
    )


_private_dir: str | None = None


def _file(base: Path, path: str | None, data: str | None, label: str) -> str | None:
    """A kubeconfig's file field (relative to the kubeconfig) or its base64 data field, as a path."""
    if path:
        return str(base / os.path.expanduser(path))
    if not data:
        return None
    return _private_file(base64.b64decode(data), label)


def _private_file(content: bytes, label: str) -> str:
    global _private_dir
    if _private_dir is None:
        _private_dir = tempfile.mkdtemp(prefix="mlflow-operator-credentials-")  # 0700
        atexit.register(shutil.rmtree, _private_dir, ignore_errors=True)  # no key left behind
    fd, name = tempfile.mkstemp(prefix=f"{label}-", suffix=".pem", dir=_private_dir)  # 0600
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    return name


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
