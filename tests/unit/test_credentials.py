"""Where the operator finds the API server and its credentials (controller/credentials.py): a pod's
ServiceAccount, or a kubeconfig as kubectl reads it. The requests themselves are tested against the
real API server in the cluster tier."""
from __future__ import annotations

import base64
import os
import stat

import pytest
import yaml

from mlflow_operator.controller import credentials


def write_kubeconfig(path, user: dict, cluster: dict | None = None, current: str = "dev"):
    path.write_text(yaml.safe_dump({
        "current-context": current,
        "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "team"}}],
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://127.0.0.1:6443/", "certificate-authority": "ca.crt"}}],
        "users": [{"name": "u", "user": user}],
    }))
    return path


def test_a_pod_uses_its_service_account_and_rereads_a_rotated_token(tmp_path):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("first\n")
    (sa / "ca.crt").write_text("CA")
    (sa / "namespace").write_text("mlflow-operator")
    c = credentials.load({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, sa)
    assert (c.server, c.ca_file, c.namespace) == ("https://10.96.0.1:443", str(sa / "ca.crt"), "mlflow-operator")
    assert c.headers() == {"Authorization": "Bearer first"}
    (sa / "token").write_text("rotated")
    assert c.bearer_token() == "first"  # within the minute: not re-read per request
    assert c.bearer_token(fresh=True) == "rotated"
    v6 = credentials.load({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, sa)
    assert v6.server == "https://[fd00::1]:443"


def test_a_kubeconfig_resolves_paths_beside_itself_and_writes_data_fields_to_private_files(tmp_path):
    kc = write_kubeconfig(tmp_path / "config", {
        "client-certificate-data": base64.b64encode(b"CERT").decode(),
        "client-key-data": base64.b64encode(b"KEY").decode()})
    c = credentials.load({"KUBECONFIG": str(kc), "HOME": str(tmp_path)}, tmp_path / "no-sa")
    assert c.server == "https://127.0.0.1:6443" and c.ca_file == str(tmp_path / "ca.crt") and c.namespace == "team"
    assert open(c.cert_file, "rb").read() == b"CERT" and open(c.key_file, "rb").read() == b"KEY"
    assert stat.S_IMODE(os.stat(c.key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(c.key_file)).st_mode) == 0o700
    assert c.headers() == {}


def test_tokens_token_files_and_basic_auth(tmp_path):
    (tmp_path / "tok").write_text("from-file")
    assert credentials.from_kubeconfig([write_kubeconfig(tmp_path / "a", {"token": "t"})]).headers() == {
        "Authorization": "Bearer t"}
    assert credentials.from_kubeconfig([write_kubeconfig(tmp_path / "b", {"tokenFile": "tok"})]).headers() == {
        "Authorization": "Bearer from-file"}
    basic = credentials.from_kubeconfig([write_kubeconfig(tmp_path / "c", {"username": "admin", "password": "pw"})])
    assert basic.headers() == {"Authorization": "Basic " + base64.b64encode(b"admin:pw").decode()}
    insecure = credentials.from_kubeconfig([write_kubeconfig(
        tmp_path / "d", {"token": "t"}, {"server": "https://k:6443", "insecure-skip-tls-verify": True})])
    assert insecure.insecure and insecure.ca_file is None


def test_kubeconfig_files_merge_as_kubectl_merges_them(tmp_path):
    """The first file that sets current-context wins; a name's first definition wins; a missing file is skipped."""
    first = tmp_path / "first"
    first.write_text(yaml.safe_dump({"current-context": "dev", "users": [{"name": "u", "user": {"token": "first"}}]}))
    second = write_kubeconfig(tmp_path / "second", {"token": "second"}, current="other")
    c = credentials.from_kubeconfig([tmp_path / "missing", first, second])
    assert c.token == "first" and c.server == "https://127.0.0.1:6443"


PLUGIN = """#!{python}
import json, os, sys, pathlib
calls = pathlib.Path(sys.argv[1])
n = int(calls.read_text()) + 1 if calls.exists() else 1
calls.write_text(str(n))
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["kind"] == "ExecCredential" and info["spec"]["interactive"] is False, info
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": {{
    "token": os.environ["TEAM"] + "-" + str(n), "expirationTimestamp": sys.argv[2]}}}}))
"""


def test_an_exec_plugin_runs_as_kubectl_runs_it_and_again_when_its_token_expires(tmp_path):
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    plugin = bin_dir / "get-token"
    plugin.write_text(PLUGIN.format(python=sys.executable))
    plugin.chmod(0o755)
    calls = tmp_path / "calls"

    def kubeconfig(name: str, expiry: str):
        return write_kubeconfig(tmp_path / name, {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": "bin/get-token",  # relative to the file
            "args": [str(calls), expiry], "env": [{"name": "TEAM", "value": "ml"}]}})

    lasting = credentials.from_kubeconfig([kubeconfig("lasting", "2999-01-01T00:00:00Z")])
    assert lasting.headers() == {"Authorization": "Bearer ml-1"}
    assert lasting.bearer_token() == "ml-1"  # not expired: not run again
    assert lasting.bearer_token(fresh=True) == "ml-2"  # after a 401 (Kopf's re-login)
    assert lasting.token_expiry().isoformat() == "2998-12-31T23:59:30+00:00"  # renewed 30 s before it expires
    expired = credentials.from_kubeconfig([kubeconfig("expired", "2000-01-01T00:00:00Z")])
    assert expired.bearer_token() == "ml-3" and expired.bearer_token() == "ml-4"

    failing = credentials.from_kubeconfig([write_kubeconfig(tmp_path / "failing", {"exec": {"command": "false"}})])
    with pytest.raises(credentials.CredentialsError, match="exec plugin 'false' exited 1"):
        failing.headers()


def test_what_cannot_be_used_is_refused_with_a_reason(tmp_path):
    provider = write_kubeconfig(tmp_path / "provider", {"auth-provider": {"name": "gcp"}})
    with pytest.raises(credentials.CredentialsError, match="auth-provider plugin.*kubectl create token"):
        credentials.from_kubeconfig([provider])
    with pytest.raises(credentials.CredentialsError, match="no current-context"):
        credentials.from_kubeconfig([write_kubeconfig(tmp_path / "none", {"token": "t"}, current="")])
    with pytest.raises(credentials.CredentialsError, match="'nowhere' is not a context"):
        credentials.from_kubeconfig([write_kubeconfig(tmp_path / "bad", {"token": "t"}, current="nowhere")])
    with pytest.raises(credentials.CredentialsError, match="KUBECONFIG is not set"):
        credentials.load({"HOME": str(tmp_path)}, tmp_path / "no-sa")


def test_the_operators_process_loads_no_kubernetes_client_package_even_where_one_is_installed():
    """The tests' venv has `kubernetes` and pykube; the image has neither. The process must be the
    same in both: Kopf and the handlers import without them (Kopf logs in through on.login)."""
    import subprocess
    import sys

    script = ("from mlflow_operator.controller import main; main.block_unused_client_packages()\n"
              "import kopf, mlflow_operator.controller.handlers, mlflow_operator.controller.watch_streams, sys\n"
              "print(sorted(m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in "
              "('kubernetes', 'kubernetes_asyncio', 'pykube')))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
