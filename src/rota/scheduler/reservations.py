"""Slot reservations and claim grants (pure, no I/O).

Slot reservations: the free slots the scheduler leader hands to the store ahead of time
(pure, no I/O).

When a cycle leaves nothing pending, the leader picks, with its placement policy, up to
``per_queue`` free slots for each queue its live nodes serve, as if that many plain jobs
(no resources, labels, affinity or limits) had been submitted to each queue, the queues
taking turns. The store then assigns a plain job submitted while nothing is pending to
the first of its queue's reserved nodes in the submit's own transaction (see
``Store.reserve_slots``), so an idle fleet starts it without a scheduler round trip in
between. The next cycle's snapshot drops the reservations and the cycle makes new ones.

Every reserved slot is one a job could be placed in at that moment, counted against the
node's free room like an assignment, so no slot is promised twice and the store still
checks that the node is live when it uses one.

Claim grants: the queues each live node may claim plain jobs from itself, filling its own
free slots from the head of the pending jobs (``FastPaths.grant_claims``). A plain job
fits any live node serving its queue that has a free slot (placement filters on queue,
labels, resources and room only), and the claiming node has one by construction, so the
grant lists every live node with all its queues: placement filters hold exactly; only the
policy's choice between several nodes with free room is left to which asks first. Fair
share and backfill choose between plain jobs too, so under them the leader grants nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from rota.core.model import NodeRecord, NodeState, PendingJob
from rota.scheduler.placement import Policy, place


def reserve(
    nodes: Sequence[NodeRecord], policy: str | Policy, per_queue: int
) -> dict[str, list[str]]:
    """For each queue served by a live node, the node ids (a node once per slot) that
    ``per_queue`` plain jobs of that queue would be placed on, in placement order."""
    queues = sorted({q for n in nodes if n.state == NodeState.LIVE for q in n.spec.queues})
    if per_queue <= 0 or not queues:
        return {}
    probes = [
        PendingJob(
            id=f"{i}\0{queue}", queue=queue, priority=0, seq=i, resources={}, labels={}, affinity={}
        )
        for i in range(per_queue)
        for queue in queues
    ]
    out: dict[str, list[str]] = {}
    for a in place(probes, nodes, policy).assignments:
        queue = a.job_id.split("\0", 1)[1]
        out.setdefault(queue, []).append(a.node_id)
    return out


def grants(nodes: Sequence[NodeRecord]) -> dict[str, tuple[str, ...]]:
    """For each live node, the queues whose plain jobs it may claim itself."""
    return {n.id: tuple(n.spec.queues) for n in nodes if n.state == NodeState.LIVE}
