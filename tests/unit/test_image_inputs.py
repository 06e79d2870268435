"""The image builds' bookkeeping: what `make images` hashes to decide a rebuild, and the operator's lock."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from images.build import specs

REPO = Path(__file__).resolve().parents[2]


def _copied_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w.rstrip("/") for w in words[1:-1] if not w.startswith("--")]
    return sources


@pytest.mark.parametrize("name", sorted(specs()))
def test_every_file_a_dockerfile_copies_is_an_input_of_its_rebuild_key(name):
    """Else a change to that file would leave a stale cached image."""
    spec = specs()[name]
    sources = _copied_sources(spec.dockerfile)
    assert sources, f"{spec.dockerfile} copies nothing?"
    for source in sources:
        assert any(source == i or source.startswith(i + "/") for i in spec.inputs), (
            f"{spec.dockerfile} copies {source}, which is not in the {name} image's inputs {spec.inputs}"
        )


def _lock_pins(lock: Path) -> dict[str, list[str]]:
    pins: dict[str, list[str]] = {}
    current = None
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            current = re.sub(r"[-_.]+", "-", m.group(1)).lower()
            pins[current] = []
        elif current and "--hash=sha256:" in line:
            pins[current].append(line.split("--hash=sha256:")[1].split()[0])
    return pins


def test_operator_lock_pins_every_dependency_and_the_build_backend_with_hashes():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = _lock_pins(REPO / "operator" / "requirements.lock")
    wanted = project["project"]["dependencies"] + project["build-system"]["requires"]
    for requirement in wanted:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)).lower()
        assert name in pins, f"{requirement} (pyproject.toml) is not in operator/requirements.lock: run operator/lock.sh"
    unhashed = [name for name, hashes in pins.items() if not hashes]
    assert not unhashed, f"pinned without a hash: {unhashed}"
    assert "--require-hashes" in (REPO / "operator" / "Dockerfile").read_text()


def test_the_cache_finds_each_checkouts_image_by_key_and_keeps_the_newest_archives(tmp_path, monkeypatch):
    """Two checkouts with different sources alternate: each finds its own archive, nothing rebuilds
    in turn; only the oldest archives beyond KEEP_ARCHIVES go, with their records."""
    import json
    import os
    from dataclasses import asdict

    from images import build

    monkeypatch.setattr(build, "cache_dir", lambda: tmp_path)
    keys = [f"{i:016x}" for i in range(build.KEEP_ARCHIVES + 2)]
    for i, key in enumerate(keys):
        archive = tmp_path / f"operator-{key}.tar"
        archive.write_bytes(b"x")
        os.utime(archive, (1_000_000 + i, 1_000_000 + i))
        image = build.Image(name="operator", ref="r", archive=str(archive), key=key, builder="buildah",
                            base="b", size_bytes=1, archive_bytes=1, build_seconds=0.0)
        (tmp_path / f"operator-{key}.json").write_text(json.dumps(asdict(image)))
        (tmp_path / "operator.json").write_text(json.dumps(asdict(image)))
    (tmp_path / "operator-previous-0000000000000000.tar").write_bytes(b"y")  # another image's archive

    assert build.cached("operator", keys[1]).key == keys[1]  # not only the last one built
    assert build.cached("operator").key == keys[-1]
    assert build.cached("operator", "f" * 16) is None
    build._prune_archives(tmp_path, "operator")
    kept = sorted(p.name for p in tmp_path.glob("operator-*.tar"))
    assert kept == sorted([f"operator-{k}.tar" for k in keys[-build.KEEP_ARCHIVES:]] + ["operator-previous-0000000000000000.tar"])
    assert build.cached("operator", keys[0]) is None and not (tmp_path / f"operator-{keys[0]}.json").exists()
    assert build.cached("operator", keys[-1]).key == keys[-1]
