"""Kubeconfig files, written as JSON (a YAML subset: kubectl and the Python client read it)
so this stays standard-library only. Credentials are embedded, so a file is self-contained."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path


def _b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def build(
    server: str,
    *,
    ca_data: str | None = None,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    token: str | None = None,
    cluster_name: str = "localcluster",
    user_name: str = "admin",
    namespace: str | None = None,
) -> dict:
    """A one-context kubeconfig. ca_data is base64 PEM (as in kubeconfig files)."""
    cluster: dict = {"server": server}
    if ca_file is not None:
        ca_data = _b64(ca_file)
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    user: dict = {}
    if cert_file is not None and key_file is not None:
        user["client-certificate-data"] = _b64(cert_file)
        user["client-key-data"] = _b64(key_file)
    if token is not None:
        user["token"] = token
    context: dict = {"cluster": cluster_name, "user": user_name}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": cluster_name, "context": context}],
        "current-context": cluster_name,
        "preferences": {},
    }


def write(path: Path, config: dict) -> Path:
    """Write atomically with mode 0600 (it holds credentials)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
    return path
