"""The fault suite reuses the acceptance fixture layer (``Fleet``, store URLs, log tails
in failure reports) with a client of its own task module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rota import Rota
from tests.acceptance.conftest import (  # noqa: F401  (fixtures and the report hook)
    _no_ambient_store,
    fleet,
    kind,
    pytest_runtest_makereport,
    url,
)
from tests.faults import apps


@pytest.fixture
def client(url: str) -> Iterator[Rota]:  # noqa: F811
    """The fault tasks, submitting to this test's store."""
    app = apps.build(url)
    yield app
    app.close()
