"""Certificates and keys for the local control plane, made with the `openssl` command line.

One CA signs the API server's serving certificate and every client certificate (admin,
controller-manager, scheduler, kwok, the API server's kubelet client). The service-account
token key pair is separate. ECDSA P-256 keeps generation to milliseconds.
"""
from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class CertError(RuntimeError):
    pass


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if not exe:
        raise CertError("the `openssl` command is needed to make the cluster's certificates (apt-get install openssl)")
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CertError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def _ec_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path), cwd=path.parent)
    path.chmod(0o600)


class CertificateAuthority:
    """A CA in a directory; `issue` signs client or server certificates with it."""

    def __init__(self, directory: Path, name: str = "localcluster-ca"):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert = directory / "ca.crt"
        self.key = directory / "ca.key"
        if not self.cert.is_file():
            _ec_key(self.key)
            _openssl(
                "req", "-x509", "-new", "-key", str(self.key), "-out", str(self.cert), "-days", "3650",
                "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                cwd=directory,
            )

    def issue(
        self,
        name: str,
        common_name: str,
        organizations: tuple[str, ...] = (),
        *,
        server_sans: tuple[str, ...] = (),
        client: bool = True,
        days: int = 365,
    ) -> KeyPair:
        """Sign `<name>.crt`/`<name>.key`. server_sans like ("IP:127.0.0.1", "DNS:localhost") make
        it a serving certificate too."""
        key, csr, crt, ext = (self.dir / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
        _ec_key(key)
        subject = "".join(f"/O={o}" for o in organizations) + f"/CN={common_name}"
        _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", subject, cwd=self.dir)
        usages = (["clientAuth"] if client else []) + (["serverAuth"] if server_sans else [])
        lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={','.join(usages)}",
        ]
        if server_sans:
            lines.append("subjectAltName=" + ",".join(server_sans))
        ext.write_text("\n".join(lines) + "\n")
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-set_serial", str(secrets.randbits(126) | 1 << 125), "-out", str(crt), "-days", str(days), "-sha256", "-extfile", str(ext),
            cwd=self.dir,
        )
        csr.unlink(missing_ok=True)
        ext.unlink(missing_ok=True)
        return KeyPair(crt, key)


def service_account_keys(directory: Path) -> KeyPair:
    """ECDSA P-256 key pair that signs (ES256) and verifies service-account tokens
    (`cert` is the public key PEM)."""
    key, pub = directory / "sa.key", directory / "sa.pub"
    _ec_key(key)
    _openssl("pkey", "-in", str(key), "-pubout", "-out", str(pub), cwd=directory)
    return KeyPair(pub, key)
