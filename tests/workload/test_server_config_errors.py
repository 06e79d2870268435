"""Bad configuration gets a clear error, exit code 2, no secret in the output, and nothing started."""
from __future__ import annotations

import pytest

from .server_env import ADMIN_PASSWORD, O, SECRET_KEY, basic_auth

PG = "postgresql://mlflow:Sup3r-Secret-Pw@db.example.internal:5432/mlflow"
S3 = "s3://bucket/artifacts"

CASES = {
    "unknown role": ({O + "ROLE": "both", O + "BACKEND_STORE_URI": PG, O + "ARTIFACTS_DESTINATION": S3},
                     ["MLFLOW_OPERATOR_ROLE='both'", "tracking or artifacts"]),
    "artifacts-only with a backend": ({O + "ROLE": "artifacts", O + "BACKEND_STORE_URI": PG, O + "ARTIFACTS_DESTINATION": S3},
                                      ["ROLE=artifacts with MLFLOW_OPERATOR_BACKEND_STORE_URI set"]),
    "artifacts-only without destination": ({O + "ROLE": "artifacts"}, ["ROLE=artifacts needs MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"]),
    "artifacts-only not serving": ({O + "ROLE": "artifacts", O + "SERVE_ARTIFACTS": "false", O + "ARTIFACTS_DESTINATION": S3},
                                   ["SERVE_ARTIFACTS=false"]),
    "no backend": ({O + "ARTIFACTS_DESTINATION": S3}, ["BACKEND_STORE_URI is required"]),
    "proxied without destination": ({O + "BACKEND_STORE_URI": PG, O + "SERVE_ARTIFACTS": "true"},
                                    ["SERVE_ARTIFACTS=true needs MLFLOW_OPERATOR_ARTIFACTS_DESTINATION"]),
    "direct with a destination": ({O + "BACKEND_STORE_URI": PG, O + "SERVE_ARTIFACTS": "false", O + "ARTIFACTS_DESTINATION": S3,
                                   O + "DEFAULT_ARTIFACT_ROOT": S3}, ["SERVE_ARTIFACTS=false with MLFLOW_OPERATOR_ARTIFACTS_DESTINATION set"]),
    "direct without root": ({O + "BACKEND_STORE_URI": PG, O + "SERVE_ARTIFACTS": "false"}, ["needs MLFLOW_OPERATOR_DEFAULT_ARTIFACT_ROOT"]),
    "relative sqlite": ({O + "BACKEND_STORE_URI": "sqlite:///mlflow.db", O + "ARTIFACTS_DESTINATION": S3}, ["absolute path"]),
    "unknown db scheme": ({O + "BACKEND_STORE_URI": "mongodb://u:Sup3r-Secret-Pw@h/db", O + "ARTIFACTS_DESTINATION": S3},
                          ["unsupported backend URI scheme"]),
    "driver not in image": ({O + "BACKEND_STORE_URI": PG.replace("postgresql:", "postgresql+psycopg:"), O + "ARTIFACTS_DESTINATION": S3},
                            ["driver 'psycopg' is not in the image"]),
    "abfss artifacts": ({O + "BACKEND_STORE_URI": PG, O + "ARTIFACTS_DESTINATION": "abfss://c@acct.dfs.core.windows.net/x"},
                        ["unsupported artifact URI", "wasbs://"]),
    "bad workers": ({O + "BACKEND_STORE_URI": PG, O + "ARTIFACTS_DESTINATION": S3, O + "WORKERS": "many"}, ["WORKERS='many'"]),
    "bad boolean": ({O + "BACKEND_STORE_URI": PG, O + "ARTIFACTS_DESTINATION": S3, O + "EXPOSE_PROMETHEUS": "yes please"},
                    ["EXPOSE_PROMETHEUS='yes please'"]),
    "bad upload size": ({O + "BACKEND_STORE_URI": PG, O + "ARTIFACTS_DESTINATION": S3, O + "MAX_UPLOAD_SIZE": "5GB"},
                        ["MAX_UPLOAD_SIZE='5GB'", "Ki, Mi, Gi or Ti"]),
    "metrics on the API port": ({O + "BACKEND_STORE_URI": PG, O + "ARTIFACTS_DESTINATION": S3, O + "EXPOSE_PROMETHEUS": "true",
                                 O + "PORT": "5000", O + "METRICS_PORT": "5000"}, ["METRICS_PORT=5000 is the API port"]),
    "basic-auth without secret key": ({O + "BACKEND_STORE_URI": PG, O + "ARTIFACTS_DESTINATION": S3,
                                       **{k: v for k, v in basic_auth(PG).items() if k != "MLFLOW_FLASK_SERVER_SECRET_KEY"}},
                                      ["AUTH=basic needs MLFLOW_FLASK_SERVER_SECRET_KEY"]),
    "basic-auth short admin password": ({O + "BACKEND_STORE_URI": PG, O + "ARTIFACTS_DESTINATION": S3, **basic_auth(PG),
                                         O + "ADMIN_PASSWORD": "short-pw"}, ["at least 12"]),
    "basic-auth on artifacts-only": ({O + "ROLE": "artifacts", O + "ARTIFACTS_DESTINATION": S3, **basic_auth(PG)},
                                     ["AUTH=basic with MLFLOW_OPERATOR_ROLE=artifacts"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_is_refused_clearly(entrypoint, case):
    env, expected = CASES[case]
    res = entrypoint("serve", env, timeout=60)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "invalid configuration" in out
    for text in expected:
        assert text in out, f"expected {text!r} in:\n{out}"
    for secret in ("Sup3r-Secret-Pw", ADMIN_PASSWORD, SECRET_KEY):
        assert secret not in out


def test_all_problems_are_listed_at_once(entrypoint):
    res = entrypoint("serve", {O + "ROLE": "artifacts", O + "BACKEND_STORE_URI": PG, O + "WORKERS": "0"}, timeout=60)
    out = res.stderr
    assert res.returncode == 2
    assert "WORKERS=0" in out and "ARTIFACTS_DESTINATION" in out and "BACKEND_STORE_URI set" in out, out


def test_value_and_file_variants(entrypoint, tmp_path):
    secret_file = tmp_path / "uri"
    secret_file.write_text("sqlite:///relative.db\n")
    both = entrypoint("serve", {O + "BACKEND_STORE_URI": PG, O + "BACKEND_STORE_URI_FILE": str(secret_file),
                                O + "ARTIFACTS_DESTINATION": S3}, timeout=60)
    assert both.returncode == 2 and "BACKEND_STORE_URI_FILE are both set" in both.stderr
    from_file = entrypoint("serve", {O + "BACKEND_STORE_URI_FILE": str(secret_file), O + "ARTIFACTS_DESTINATION": S3}, timeout=60)
    assert from_file.returncode == 2 and "absolute path" in from_file.stderr  # the file's content was read
    missing = entrypoint("serve", {O + "BACKEND_STORE_URI_FILE": str(tmp_path / "nope"), O + "ARTIFACTS_DESTINATION": S3}, timeout=60)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_unreachable_database_error_names_host_not_password(entrypoint):
    from testservices._util import free_port

    uri = f"postgresql://mlflow:Sup3r-Secret-Pw@127.0.0.1:{free_port()}/mlflow"
    res = entrypoint("serve", {O + "BACKEND_STORE_URI": uri, O + "ARTIFACTS_DESTINATION": S3,
                               O + "BACKEND_WAIT_SECONDS": "1"}, timeout=60)
    out = res.stdout + res.stderr
    assert res.returncode == 3, out
    assert "127.0.0.1" in out and "did not answer within 1s" in out
    assert "Sup3r-Secret-Pw" not in out
