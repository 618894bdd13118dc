"""The packages the dashboard tests need. When one is missing, ``conftest.py`` leaves the
other test modules out and ``test_deps.py`` reports why: a skip, or a failure under
``ROTA_REQUIRE_SERVICES=1``."""

from __future__ import annotations

import importlib

MODULES = ("starlette", "uvicorn", "prometheus_client", "starlette.testclient")


def missing() -> str | None:
    """Why the dashboard tests cannot run, or ``None``."""
    for module in MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"the dashboard tests need 'pip install rota[dashboard,dev]' ({exc})"
    return None
