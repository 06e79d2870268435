"""A real OpenID Connect provider (Dex) and the sign-in proxy (oauth2-proxy), on 127.0.0.1.

    dex = Dex(workdir, users=[DexUser("alice@example.com", "pw", ["ml-team"])],
              clients=[DexClient("mlflow", "secret", ["http://127.0.0.1:5000/oauth2/callback"])]).start()
    dex.issuer      # https://127.0.0.1:<port>/dex, TLS signed by dex.ca_file
    dex.password_token("alice@example.com", "pw", client)   # an ID token from the password grant
    proxy = OAuth2Proxy(args, env, workdir).start()        # args as the operator renders them

Dex serves HTTPS with a certificate of a CA made for it (``ca_file``), keeps everything in memory
(static clients and static passwords with groups), and grants passwords through its local
connector, so a client gets a real ID token without a browser. With ``storage`` (Dex's own
storage setting, e.g. PostgreSQL) it keeps its state, signing keys included, there, and
``replica()`` is a second Dex on the same storage and issuer, as Dex runs highly available: its
tokens are signed with the same keys, with their own lifetime. Both binaries are built from their
Go modules (gobinaries.py). Every process stops with the process that started it (``_util.owned``).
"""
from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import base64
from dataclasses import dataclass, field
from pathlib import Path

from localcluster.certs import CertificateAuthority

from . import ServiceError
from ._util import die_with_parent, disowned, free_port, owned, stop, tail, wait_port
from .gobinaries import dex_binary, oauth2_proxy_binary


@dataclass(frozen=True)
class DexUser:
    email: str
    password: str
    groups: list[str] = field(default_factory=list)

    @property
    def username(self) -> str:
        return self.email.split("@", 1)[0]


@dataclass(frozen=True)
class DexClient:
    id: str
    secret: str
    redirect_uris: list[str]


def bcrypt_hash(password: str) -> str:
    """Dex keeps static passwords as bcrypt hashes. Made by a small Go program built beside Dex
    (gobinaries.dex_bcrypt_binary) with the bcrypt package Dex checks them with; Python's crypt
    module, which glibc's crypt(3) made them with before, is gone in Python 3.13."""
    from .gobinaries import dex_bcrypt_binary

    proc = subprocess.run([str(dex_bcrypt_binary())], input=password.encode(), capture_output=True, timeout=60)
    hashed = proc.stdout.decode().strip()
    if proc.returncode != 0 or not hashed.startswith("$2"):
        raise ServiceError(f"hashing a Dex password failed (exit {proc.returncode}): {proc.stderr[-300:]!r}")
    return hashed


class Dex:
    """`public_host`: the name in the issuer URL, for a provider that others reach by a name (the
    node tier's pods: a Service relayed to this loopback port); its certificate names it too. This
    process still talks to 127.0.0.1 (Dex answers any Host; the tokens carry the issuer)."""

    def __init__(self, workdir: Path, users: list[DexUser], clients: list[DexClient], id_token_seconds: int = 600,
                 public_host: str = "127.0.0.1", storage: dict | None = None, replica_of: "Dex | None" = None):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.users, self.clients, self.id_token_seconds = users, clients, id_token_seconds
        self.public_host = public_host
        self.storage = storage or {"type": "memory"}
        self.port = free_port()
        self.log = self.dir / "dex.log"
        self.proc: subprocess.Popen | None = None
        if replica_of is not None:  # the same issuer URL and certificate; its own listening port
            self.issuer_port, self.ca_file, self.tls = replica_of.issuer_port, replica_of.ca_file, replica_of.tls
            return
        self.issuer_port = self.port
        ca = CertificateAuthority(self.dir / "ca", name="dex-test-ca")
        self.ca_file = ca.cert
        sans = ("IP:127.0.0.1", "DNS:localhost") + ((f"DNS:{public_host}",) if public_host != "127.0.0.1" else ())
        self.tls = ca.issue("dex", "dex", server_sans=sans, client=False)

    def replica(self, workdir: Path, id_token_seconds: int) -> "Dex":
        """Another Dex (not started) on this one's storage, issuer, users and clients, issuing ID
        tokens that live `id_token_seconds`: signed with the same keys (they are in the storage),
        so whoever trusts this Dex trusts them. Only with a shared storage (not memory)."""
        if self.storage["type"] == "memory":
            raise ValueError("a Dex replica needs a shared storage, not memory")
        return Dex(workdir, self.users, self.clients, id_token_seconds, self.public_host, self.storage, replica_of=self)

    @property
    def issuer(self) -> str:
        return f"https://{self.public_host}:{self.issuer_port}/dex"

    @property
    def local_url(self) -> str:
        """The issuer's address on this machine's loopback (the same server)."""
        return f"https://127.0.0.1:{self.port}/dex"

    def config(self) -> dict:
        return {
            "issuer": self.issuer,
            "storage": self.storage,
            "web": {"https": f"127.0.0.1:{self.port}", "tlsCert": str(self.tls.cert), "tlsKey": str(self.tls.key)},
            "logger": {"level": "info", "format": "text"},
            "oauth2": {"skipApprovalScreen": True, "passwordConnector": "local",
                       "grantTypes": ["authorization_code", "refresh_token", "password"],
                       "responseTypes": ["code"]},
            "expiry": {"idTokens": f"{self.id_token_seconds}s"},
            "enablePasswordDB": True,
            "staticClients": [{"id": c.id, "secret": c.secret, "name": c.id, "redirectURIs": c.redirect_uris}
                              for c in self.clients],
            "staticPasswords": [
                {"email": u.email, "hash": bcrypt_hash(u.password), "username": u.username,
                 "userID": secrets.token_hex(8), "groups": u.groups, "emailVerified": True}
                for u in self.users
            ],
        }

    def start(self, timeout: float = 60) -> "Dex":
        binary = dex_binary()
        config = self.dir / "dex.json"  # YAML is a superset of JSON: Dex reads it as is
        config.write_text(json.dumps(self.config(), indent=2))
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(binary), "serve", str(config)], stdout=fh, stderr=subprocess.STDOUT, cwd=self.dir,
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.dir)}, start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        fh.close()
        owned(self)
        try:
            wait_port(self.port, timeout, self.proc, "Dex", self.log)
            self.discovery()
        except Exception:
            self.stop()
            raise
        return self

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def discovery(self) -> dict:
        with urllib.request.urlopen(self.local_url + "/.well-known/openid-configuration", timeout=10,
                                    context=self.ssl_context()) as r:
            return json.load(r)

    def password_token(self, user: DexUser, client: DexClient, scope: str = "openid email profile groups") -> str:
        """An ID token for the user, issued to the client (the OAuth 2.0 password grant)."""
        body = urllib.parse.urlencode({"grant_type": "password", "username": user.email, "password": user.password,
                                       "scope": scope}).encode()
        basic = base64.b64encode(f"{urllib.parse.quote(client.id)}:{urllib.parse.quote(client.secret)}".encode()).decode()
        req = urllib.request.Request(self.local_url + "/token", data=body, headers={
            "Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.ssl_context()) as r:
                return json.load(r)["id_token"]
        except urllib.error.HTTPError as e:
            raise ServiceError(f"Dex refused the password grant for {user.email}: {e.code} {e.read()[:300]!r}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        stop(self.proc)
        disowned(self)


class OAuth2Proxy:
    """oauth2-proxy with the given arguments and environment (the sidecar's, as rendered)."""

    def __init__(self, args: list[str], env: dict[str, str], workdir: Path, port: int, name: str = "oauth2-proxy"):
        self.args, self.env, self.port = args, env, port
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / f"{name}-{port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> "OAuth2Proxy":
        binary = oauth2_proxy_binary()
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(binary), *self.args], stdout=fh, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(),
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.dir), **self.env}, start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        fh.close()
        owned(self)
        try:
            wait_port(self.port, timeout, self.proc, "oauth2-proxy", self.log)
        except Exception:
            self.stop()
            raise
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        stop(self.proc)
        disowned(self)


__all__ = ["Dex", "DexClient", "DexUser", "OAuth2Proxy", "ServiceError", "bcrypt_hash", "free_port", "tail"]
