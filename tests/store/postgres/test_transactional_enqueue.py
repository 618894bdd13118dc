"""Transactional enqueue through the public API: ``task.options(connection=conn).submit()``
writes the job in the caller's PostgreSQL transaction; other stores refuse ``connection=``."""

from __future__ import annotations

from pathlib import Path

import pytest

from rota import InvalidOption, JobState, Rota
from tests.stores import PG_DB, PG_HOST, PG_PORT, store_url


def _app(url: str) -> Rota:
    app = Rota(url)

    @app.task(name="orders.ship")
    def ship(order_id: int) -> int:
        return order_id

    return app


def test_commit_keeps_the_job_and_rollback_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROTA_STORE", raising=False)
    with store_url("postgres", tmp_path) as url:
        import psycopg

        app = _app(url)
        ship = app.get_task("orders.ship")
        app.store.migrate()
        dsn = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}"
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TEMP TABLE orders (id int)")
            conn.execute("INSERT INTO orders VALUES (1)")
            kept = ship.options(connection=conn).submit(1)
            conn.commit()
            conn.execute("INSERT INTO orders VALUES (2)")
            gone = ship.options(connection=conn, priority=3).submit_many([(2,), (3,)])
            conn.rollback()
        assert kept.status() is JobState.PENDING
        assert app.store.get_jobs([h.id for h in gone]) == []
        assert sum(app.store.count_jobs().values()) == 1
        app.close()


def test_other_stores_refuse_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROTA_STORE", raising=False)
    app = _app(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(InvalidOption, match="PostgreSQL"):
        app.get_task("orders.ship").options(connection=object()).submit(1)
    assert app.store.count_jobs() == {}
