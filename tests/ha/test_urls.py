"""Store URLs for replicated deployments, and durable mode against a Redis that has no
replica (the shared one): parsing, errors, and what a write does when no replica confirms."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rota.core.errors import InvalidOption, StoreError
from rota.core.model import NewJob
from rota.status import redact_url
from rota.store import open_store
from tests.stores import PG_DB, PG_HOST, PG_PORT, store_url


def test_sentinel_and_cluster_urls_are_parsed() -> None:
    from rota.store.redis import topology

    t = topology.parse("redis+sentinel://:pw@s1:1,s2,[::1]:3/main?db=2&prefix=x&durable=1")
    assert (t.kind, t.master) == ("redis+sentinel", "main")
    assert t.hosts == (("s1", 1), ("s2", 26379), ("::1", 3))
    assert t.options == {"password": "pw", "db": 2}
    c = topology.parse("redis+cluster://h1:7000,h2:7001/?prefix=x")
    assert c.hosts == (("h1", 7000), ("h2", 7001))
    with pytest.raises(InvalidOption, match="names the primary"):
        topology.parse("redis+sentinel://s1:1/")
    with pytest.raises(InvalidOption, match="unknown parameter"):
        topology.parse("redis+sentinel://s1:1/m?bogus=1")
    with pytest.raises(InvalidOption, match="database 0"):
        topology.parse("redis+cluster://h1:1/?db=3")


def test_durable_settings() -> None:
    from rota.store.redis.durable import Durability

    assert Durability.from_url("redis://h/0") == Durability(0, 1.0)
    assert Durability.from_url("redis://h/0?durable=1&durable_timeout=0.25") == Durability(1, 0.25)
    assert Durability.from_url("redis://h/0?durable=on").replicas == 1
    for bad in ("durable=-1", "durable=x", "durable_timeout=0", "durable_timeout=nan"):
        with pytest.raises(InvalidOption):
            Durability.from_url(f"redis://h/0?{bad}")


def _job() -> NewJob:
    return NewJob(id=uuid.uuid4().hex, task="t", queue="default", payload="{}")


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with store_url("redis", tmp_path) as url:
        yield url


def test_durable_write_without_a_replica_is_an_error_but_is_applied(redis_url: str) -> None:
    from rota.store.redis.durable import NotReplicated

    store = open_store(redis_url + "&durable=1&durable_timeout=0.05")
    try:
        job = _job()
        with pytest.raises(NotReplicated, match="0 of 1 replicas"):
            store.submit([job])
        assert [r.id for r in store.get_jobs([job.id])] == [job.id]  # on the primary
    finally:
        store.close()
    plain = open_store(redis_url)  # durable off: the same Redis acknowledges at once
    try:
        job = _job()
        assert plain.submit([job]) == [job.id]
    finally:
        plain.close()


def test_libpq_keyword_form_and_multi_host_urls(tmp_path: Path) -> None:
    from rota.store.postgres.connection import parse_url
    from rota.store.postgres.hosts import conninfo_to_url

    url = conninfo_to_url("host=a,b port=1,2 dbname=test target_session_attrs=read-write schema=s")
    conninfo, schema, _ = parse_url(url)
    assert schema == "s"
    assert conninfo.startswith("postgresql:///test?")  # libpq needs the "//"
    assert "target_session_attrs=read-write" in conninfo
    conninfo, schema, _ = parse_url("postgresql://u@h1:1,h2:2/db?schema=z&sslmode=disable")
    assert (conninfo, schema) == ("postgresql://u@h1:1,h2:2/db?sslmode=disable", "z")
    assert redact_url("host=a password='s e' dbname=d") == "host=a password=*** dbname=d"
    with pytest.raises(InvalidOption):
        conninfo_to_url("host=a nonsense")


@pytest.mark.parametrize("form", ["url", "keywords"])
def test_multi_host_store_skips_a_dead_first_host(form: str, tmp_path: Path) -> None:
    """Host 1 refuses connections; libpq moves on to the real server (read-write)."""
    with store_url("postgres", tmp_path) as url:
        schema = url.rsplit("schema=", 1)[1]
        if form == "url":
            multi = (
                f"postgresql://postgres@{PG_HOST}:1,{PG_HOST}:{PG_PORT}/{PG_DB}"
                f"?target_session_attrs=read-write&schema={schema}"
            )
        else:
            multi = (
                f"host={PG_HOST},{PG_HOST} port=1,{PG_PORT} user=postgres dbname={PG_DB} "
                f"target_session_attrs=read-write schema={schema}"
            )
        store = open_store(multi)
        try:
            job = _job()
            assert store.submit([job]) == [job.id]
            assert store.get_jobs([job.id])[0].id == job.id
        finally:
            store.close()


def test_plain_url_on_a_cluster_node_fails_and_cluster_url_works(tmp_path: Path) -> None:
    """Today's behaviour of ``redis://`` on a cluster: a MOVED reply, not followed."""
    from tests.ha.servers import shared_cluster

    cluster = shared_cluster()
    prefix = f"rota-test-{uuid.uuid4().hex[:8]}"
    owner = cluster.owner(prefix)
    other = next(p for p in cluster.primary_ports() if p != owner)
    plain = open_store(f"redis://127.0.0.1:{other}/0?prefix={prefix}")
    try:
        with pytest.raises(StoreError):
            plain.submit([_job()])
    finally:
        plain.close()
    store = open_store(cluster.url(prefix))
    try:
        job = _job()
        assert store.submit([job]) == [job.id]
        assert "cluster:" in repr(store)
    finally:
        store.close()
        client = cluster.client_for(prefix)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
