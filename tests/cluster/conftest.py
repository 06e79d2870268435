"""Order of the cluster tier: the least-privilege test reads what every other test made the operator
do (the API server's audit log of this session), so it runs last."""
from __future__ import annotations

import pytest

LAST = "test_rbac_least_privilege.py"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    last = [item for item in items if item.path.name == LAST]
    if last:
        items[:] = [item for item in items if item.path.name != LAST] + last


@pytest.fixture
def operator(cluster, operator_process, volume_provisioner):
    """The session's operator (the chart's RBAC, a ServiceAccount token), alive before and after the test."""
    operator_process.assert_alive()
    yield operator_process
    operator_process.assert_alive()
    assert not volume_provisioner.errors, volume_provisioner.errors
