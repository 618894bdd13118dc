"""Reports (skip, or fail under ROTA_REQUIRE_SERVICES=1) when the dashboard's packages are
missing; the other dashboard test modules are then not collected (see conftest.py)."""

from __future__ import annotations

import pytest

from tests.dashboard.deps import missing
from tests.stores import require_services


def test_dashboard_packages_are_installed() -> None:
    reason = missing()
    if reason is None:
        return
    if require_services():
        pytest.fail(f"{reason}, and ROTA_REQUIRE_SERVICES=1 requires it")
    pytest.skip(reason)
