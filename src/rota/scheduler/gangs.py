"""Gangs: all members of a gang placed at once or none (pure).

The strategies are Ray's placement-group strategies:

- ``strict_pack``: every member on one node;
- ``pack``: on as few nodes as possible (one node if any can take them all, else filling
  the nodes the gang already uses first);
- ``strict_spread``: every member on a different node;
- ``spread``: on different nodes where possible, sharing nodes only when it must.

Within what a strategy allows, nodes are tried in placement order (affinity, the
placement policy's score, node id).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from rota.core.model import GANG_PLACEMENTS, PendingJob
from rota.scheduler.fit import Room

Allow = Callable[[int, PendingJob], bool]  # may this job go on node i (backfill guard)


def place_gang(
    members: Sequence[PendingJob], room: Room, strategy: str, allow: Allow | None = None
) -> list[int] | None:
    """Node indices for ``members`` (in order), taken in ``room``; or ``None`` and
    ``room`` unchanged when the strategy cannot place them all now."""
    if strategy not in GANG_PLACEMENTS:
        raise ValueError(f"unknown gang placement {strategy!r} (known: {GANG_PLACEMENTS})")
    if strategy in ("strict_pack", "pack"):
        packed = _one_node(members, room, allow)
        if packed is not None or strategy == "strict_pack":
            return packed
    return _member_by_member(members, room, strategy, allow)


def _ok(room: Room, i: int, job: PendingJob, allow: Allow | None) -> bool:
    return room.fits(i, job) and (allow is None or allow(i, job))


def _one_node(members: Sequence[PendingJob], room: Room, allow: Allow | None) -> list[int] | None:
    for i in room.ranked(members[0]):
        taken: list[PendingJob] = []
        for job in members:
            if i not in room.eligible(job) or not _ok(room, i, job, allow):
                break
            room.take(i, job)
            taken.append(job)
        if len(taken) == len(members):
            return [i] * len(members)
        for job in taken:
            room.give(i, job)
    return None


def _member_by_member(
    members: Sequence[PendingJob], room: Room, strategy: str, allow: Allow | None
) -> list[int] | None:
    chosen: list[int] = []
    used: Counter[int] = Counter()
    for job in members:
        ranked = room.ranked(job)
        if strategy == "pack":  # nodes the gang uses first, the fullest of them first
            order = sorted((i for i in ranked if used[i]), key=lambda i: -used[i])
            order += [i for i in ranked if not used[i]]
        elif strategy == "spread":  # unused nodes first
            order = [i for i in ranked if not used[i]] + [i for i in ranked if used[i]]
        else:  # strict_spread
            order = [i for i in ranked if not used[i]]
        node = next((i for i in order if _ok(room, i, job, allow)), None)
        if node is None:
            for done, i in zip(members, chosen, strict=False):
                room.give(i, done)
            return None
        room.take(node, job)
        chosen.append(node)
        used[node] += 1
    return chosen
