"""Self-test of hack/testservices' server venv (a test of the harness, not of the product): the venv
a checkout's workload tests run is keyed by that checkout's entrypoint sources and holds exactly
them, and checkouts with other sources get other venvs instead of re-installing a shared one."""
from __future__ import annotations

import shutil

import pytest

from testservices import venvs

pytestmark = pytest.mark.workload


def _sources(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*.py") if "__pycache__" not in p.parts}


def test_server_venv_runs_this_checkouts_entrypoint_and_other_sources_get_their_own(tmp_path, monkeypatch):
    venv = venvs.server_venv()
    tree = venvs._tree_hash(venvs.SERVER_IMAGE / "entrypoint")
    assert venv.path.name.endswith(f"-ep-{tree}"), venv.path
    installed = venv.site_packages / "mlflow_entrypoint"
    want = _sources(venvs.SERVER_IMAGE / "entrypoint" / "mlflow_entrypoint")
    assert _sources(installed) == want

    # Another checkout: the same requirements, one entrypoint line different.
    other = tmp_path / "server-image"
    shutil.copytree(venvs.SERVER_IMAGE, other, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    init = other / "entrypoint" / "mlflow_entrypoint" / "__init__.py"
    init.write_text(init.read_text() + "\nOTHER_CHECKOUT = True\n")
    monkeypatch.setattr(venvs, "SERVER_IMAGE", other)
    other_venv = venvs.server_venv()
    try:
        assert other_venv.path != venv.path
        assert b"OTHER_CHECKOUT" in (other_venv.site_packages / "mlflow_entrypoint" / "__init__.py").read_bytes()
        # ... and this checkout's venv still holds this checkout's code.
        assert _sources(installed) == want
        script = other_venv.bin("mlflow-entrypoint").read_text().splitlines()[0]
        assert script == f"#!{other_venv.path}/bin/python", script
    finally:
        shutil.rmtree(other_venv.path, ignore_errors=True)
