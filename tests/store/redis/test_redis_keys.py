"""Redis URL parsing and key namespacing: every key carries its app's prefix and hash tag,
is documented in ``lua/lib.lua``'s header, and no KEYS or SCAN command is used."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from rota.store import SCHEDULER_LEASE
from tests.stores import store_url

pytest.importorskip("redis")

import redis

from rota.store.redis.connection import parse_url
from rota.store.redis.store import RedisStore
from tests.store.redis.helpers import SRC, full_flow, job, keys_of


# ---- URL and key namespacing ------------------------------------------------------------
def test_url_parsing_strips_our_parameters() -> None:
    conn, prefix, ttl = parse_url("redis://h:1/2?prefix=app1&result_ttl=60&health_check_interval=3")
    assert (prefix, ttl) == ("app1", 60.0)
    assert conn == "redis://h:1/2?health_check_interval=3"
    assert parse_url("redis://h:1/0")[1:] == ("rota", 7 * 24 * 3600.0)
    from rota.core.errors import InvalidOption

    with pytest.raises(InvalidOption):
        parse_url("redis://h/0?prefix=a{b}")
    with pytest.raises(InvalidOption):
        parse_url("redis://h/0?result_ttl=-1")


def test_two_prefixes_do_not_see_each_other(
    connect: Callable[..., RedisStore], raw: redis.Redis, tmp_path: Path
) -> None:
    a = connect()
    with store_url("redis", tmp_path) as other_url:
        b = connect(other_url)
        full_flow(a)
        mine = job()
        a.submit([mine])
        assert b.count_jobs() == {}
        assert b.get_jobs([mine.id]) == [] and b.list_jobs() == []
        assert b.pending_jobs(10) == [] and b.list_nodes() == []
        assert b.get_lease(SCHEDULER_LEASE) is None and b.get_stats("scheduler") is None
        b.submit([job()])
        assert [p.id for p in b.pending_jobs(10)] != [p.id for p in a.pending_jobs(10)]
        a_keys, b_keys = keys_of(raw, a.prefix), keys_of(raw, b.prefix)
        assert a_keys and b_keys and not set(a_keys) & set(b_keys)
        for key in a_keys:  # every key carries the app's hash tag (one cluster slot)
            assert key.startswith(f"{a.prefix}:{{{a.prefix}}}:"), key


def test_every_key_is_documented_in_the_script_header(store: RedisStore, raw: redis.Redis) -> None:
    full_flow(store)
    header = (SRC / "lua" / "lib.lua").read_text().split("]]")[0]
    families = set(re.findall(r'B\.\."([a-z:]+)"', header))
    assert {"job:", "jobs", "pending", "nodes:alive", "wake:sched"} <= families
    base = f"{store.prefix}:{{{store.prefix}}}:"
    for key in keys_of(raw, store.prefix):
        rest = key.removeprefix(base)
        fixed = rest in families  # e.g. "pending"
        by_id = any(f.endswith(":") and rest.startswith(f) for f in families)
        assert fixed or by_id, f"key {key!r} is not in the layout documented in the header"


def test_no_keys_command_anywhere(store: RedisStore, raw: redis.Redis) -> None:
    for path in [*SRC.glob("*.py"), *SRC.glob("lua/*.lua")]:
        text = path.read_text()
        assert not re.search(r"""['"]KEYS['"]""", text), path
        assert not re.search(r"\.keys\(|scan_iter|['\"]SCAN['\"]", text), path

    def calls(name: str) -> int:
        stats = raw.info("commandstats").get(f"cmdstat_{name}", {})
        return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0

    before = calls("keys")
    full_flow(store)
    assert calls("keys") == before
