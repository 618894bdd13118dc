"""The user-facing options of fleet sharing: tenant, preemptible, aging, shares, gangs."""

from __future__ import annotations

import pytest

from rota import Rota, chain, group
from rota.core.errors import InvalidOption
from rota.core.model import NO_ALLOC, AllocSpec
from rota.scheduler.fairshare import Share
from rota.workflow import build


@pytest.fixture
def app() -> Rota:
    app = Rota("sqlite:////nonexistent/never-opened.db")

    @app.task
    def train(*shards: int) -> int:
        return sum(shards)

    return app


def test_job_options_reach_the_job(app: Rota) -> None:
    train = app.get_task("train")
    job = train.options(tenant="acme", preemptible=True, aging=30).new_job((1,), {})
    assert job.alloc == AllocSpec(tenant="acme", preemptible=True, aging=30.0)
    assert train.options().new_job((1,), {}).alloc == NO_ALLOC


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"tenant": "a b"}, "tenant must match"),
        ({"tenant": 3}, "tenant must match"),
        ({"preemptible": "yes"}, "preemptible must be True or False"),
        ({"aging": 0}, "aging must be > 0"),
        ({"aging": -1}, "aging must be between 0 and"),
        ({"aging": "1m"}, "aging must be a number"),
    ],
)
def test_bad_job_options(app: Rota, opts: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        app.get_task("train").options(**opts)


def test_share(app: Rota) -> None:
    assert app.share("acme", weight=2, limit={"gpu": 8}) == Share(2.0, {"gpu": 8.0})
    assert app.share("free", limit={"gpu": 0}).limit == {"gpu": 0.0}
    assert set(app.shares) == {"acme", "free"}
    with pytest.raises(InvalidOption, match="weight must be > 0"):
        app.share("x", weight=0)
    with pytest.raises(InvalidOption, match="limit: quantity"):
        app.share("x", limit={"gpu": -1})
    with pytest.raises(InvalidOption, match="tenant must match"):
        app.share("no spaces")


def test_gang_group_marks_every_member(app: Rota) -> None:
    train = app.get_task("train")
    gang = group(*(train.s(k) for k in range(4))).options(
        gang=True, placement="strict_spread", gang_restart=True
    )
    jobs, _ = build(gang, (), "wf")
    assert {j.alloc.gang for j in jobs} == {f"wf:{jobs[0].id}"}
    assert {(j.alloc.gang_size, j.alloc.placement, j.alloc.gang_restart) for j in jobs} == {
        (4, "strict_spread", True)
    }
    plain, _ = build(group(train.s(1), train.s(2)), (), "wf")
    assert {j.alloc.gang for j in plain} == {None}
    # a gang after a step: its members share the parent and stay one gang
    jobs, _ = build(chain(train.s(0), gang), (), "wf")
    assert [j.alloc.gang_size for j in jobs] == [0, 4, 4, 4, 4]


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"gang": "yes"}, "gang must be True or False"),
        ({"gang": True, "placement": "diagonal"}, "placement must be one of"),
        ({"placement": "pack"}, "need gang=True"),
        ({"gang": True, "size": 3}, "unknown group option"),
    ],
)
def test_bad_gang_options(app: Rota, opts: dict[str, object], message: str) -> None:
    train = app.get_task("train")
    with pytest.raises(InvalidOption, match=message):
        group(train.s(1), train.s(2)).options(**opts)


def test_gang_members_are_signatures(app: Rota) -> None:
    train = app.get_task("train")
    with pytest.raises(InvalidOption, match="gang members must be task signatures"):
        group(train.s(1), chain(train.s(2), train.s(3))).options(gang=True)


def test_alloc_spec_travels_as_one_json_text() -> None:
    assert NO_ALLOC.to_json() is None
    assert AllocSpec.from_json(None) is NO_ALLOC
    spec = AllocSpec(tenant="acme", aging=5.0, gang="g", gang_size=8, placement="spread")
    text = spec.to_json()
    assert text == '{"tenant":"acme","aging":5.0,"gang":"g","gang_size":8,"placement":"spread"}'
    assert AllocSpec.from_json(text) == spec
    assert AllocSpec.from_json('{"tenant":"x","future_field":1}') == AllocSpec(tenant="x")


def test_periodic_jobs_keep_their_allocation(app: Rota) -> None:
    from rota.core.periodic import ScheduleSpec

    spec = app.schedule("train", cron="* * * * *", tenant="acme", aging=10)
    again = ScheduleSpec.from_json(spec.name, spec.to_json())
    assert again.new_job(0.0).alloc == AllocSpec(tenant="acme", aging=10.0)
    plain = app.schedule("train", cron="* * * * *", name="plain")
    assert ScheduleSpec.from_json("plain", plain.to_json()).new_job(0.0).alloc == NO_ALLOC
