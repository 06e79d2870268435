"""Test tiers: every test is marked by the folder it lives in.

- tests/unit      -> `unit`: pure, no cluster, no servers; runs in seconds.
- tests/cluster   -> `cluster`: the real control plane (hack/localcluster).
- tests/workload  -> `workload`: real MLflow, PostgreSQL, S3 and NGINX processes.
- tests/images    -> `images`: both images built from their Dockerfiles, run in real containers.
- tests/node      -> `node`: the real node: the operator installed by its chart, examples on real pods.

`make test-unit` runs `pytest -m unit`; CI runs every tier.
"""
from pathlib import Path

import pytest

TIERS = ("unit", "cluster", "workload", "images", "node")

# Shared fixtures from hack/ (on sys.path through pytest's `pythonpath`).
pytest_plugins: list[str] = [
    "testservices.pytest_plugin",
    "localcluster.pytest_plugin",
    "images.pytest_plugin",
    "tests.operator_fixtures",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_root = Path(__file__).parent
    for item in items:
        try:
            tier = Path(item.path).relative_to(tests_root).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        if tier == "node":  # the end-to-end tier: real pods, real controllers, the stock client
            item.add_marker(pytest.mark.e2e)
