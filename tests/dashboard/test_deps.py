"""Reports (skip, or fail under ROTA_REQUIRE_SERVICES=1) when the dashboard's packages are
missing; the other dashboard test modules are then not collected (see conftest.py)."""

from __future__ import annotations

from tests.dashboard.deps import missing
from tests.stores import skip_or_fail


def test_dashboard_packages_are_installed() -> None:
    reason = missing()
    if reason is None:
        return
    skip_or_fail(reason)
