"""Records of core/model.py: which new jobs use the flow fields."""

from __future__ import annotations

import pytest

from rota.core.model import NewJob


def new_job(**fields: object) -> NewJob:
    return NewJob(id="j", task="t", queue="q", payload="{}", **fields)  # type: ignore[arg-type]


def test_a_plain_job_does_not_use_flow() -> None:
    assert not new_job().uses_flow
    assert not new_job(priority=5, delay=3.0, max_attempts=4, unique_for=10.0).uses_flow


@pytest.mark.parametrize(
    "fields",
    [
        {"depends_on": ("a",)},
        {"unique_key": "k"},
        {"concurrency_key": "k", "concurrency_limit": 1},
        {"concurrency_limit": 2},
        {"rate_limit": "3/1"},
        {"workflow_id": "w"},
        {"pass_results": True},
    ],
)
def test_each_flow_field_uses_flow(fields: dict[str, object]) -> None:
    assert new_job(**fields).uses_flow
