"""hack/cluster up's instructions: what a person copies must act on their own cluster, with the
kubectl and helm it was built with."""
from __future__ import annotations

from pathlib import Path

from localcluster import __main__ as cli


def test_down_command_names_the_state_dir_up_was_started_with(monkeypatch, tmp_path):
    monkeypatch.setenv("LOCALCLUSTER_STATE_DIR", str(tmp_path / "mine"))
    assert cli.down_command() == f"LOCALCLUSTER_STATE_DIR={tmp_path / 'mine'} hack/cluster down"
    monkeypatch.delenv("LOCALCLUSTER_STATE_DIR")
    assert cli.down_command() == "hack/cluster down"


def test_up_exports_the_kubeconfig_and_the_cached_binaries_first_on_path(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LOCALCLUSTER_STATE_DIR", str(tmp_path))
    cli.print_exports(Path("/cache/bin/v1.35.4"))
    assert capsys.readouterr().out.splitlines() == [
        f"export KUBECONFIG={tmp_path / 'kubeconfig'}",
        'export PATH="/cache/bin/v1.35.4:$PATH"',
    ]
