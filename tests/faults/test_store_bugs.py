"""Minimal reproductions of store bugs the fault suite found (strict xfails: they start
passing, and fail the suite, once fixed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rota.errors import RotaError
from rota.store import open_store
from tests.faults import apps
from tests.faults.scenarios import corrupt_payload
from tests.stores import store_url


@pytest.mark.xfail(
    strict=True,
    reason="RedisStore decodes every reply as UTF-8 (decode_responses=True): a job hash "
    "whose payload is not UTF-8 raises UnicodeDecodeError from get_job/list_jobs/start_jobs "
    "(the worker then retries 'starting jobs' forever) instead of dead-lettering the job",
)
def test_redis_non_utf8_payload_is_a_corrupt_payload(tmp_path: Path) -> None:
    with store_url("redis", tmp_path) as url:
        app = apps.build(url)
        try:
            job = app.get_task("fault.echo").submit("fine")
            corrupt_payload(url, job.id, b"\xff\xfe not json")
            store = open_store(url)
            try:
                try:
                    rec = store.get_job(job.id)
                except RotaError:
                    return  # a clear error would be acceptable too
                assert rec is not None
                store.list_jobs(limit=10)
            finally:
                store.close()
        finally:
            app.close()
