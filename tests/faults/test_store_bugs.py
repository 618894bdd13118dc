"""Store bugs the fault suite found, kept as regression tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from rota.core.errors import CorruptPayload, RotaError
from rota.store import open_store
from tests.faults import apps
from tests.faults.scenarios import corrupt_payload
from tests.stores import store_url


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
                with pytest.raises(CorruptPayload):
                    rec.arguments()  # the worker dead-letters it as "corrupt payload"
                assert [j.id for j in store.list_jobs(limit=10)] == [job.id]
            finally:
                store.close()
        finally:
            app.close()
