"""``GET /metrics``: Prometheus text format, read from the store at every scrape.

A custom collector turns one ``rota.status.collect()`` snapshot into gauges, so the numbers
are those of the store (shared by every dashboard replica), not of this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rota.core.model import NodeState
from rota.core.states import JobState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SnapshotCollector(Collector):
    """Yields the rota metrics of one ``collect()`` snapshot (``None``: the store did not
    answer, so only ``rota_store_up 0``)."""

    def __init__(self, data: dict[str, Any] | None) -> None:
        self._data = data

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("rota_store_up", "1 if the store answered this scrape.")
        up.add_metric([], 0 if self._data is None else 1)
        yield up
        if self._data is not None:
            yield from snapshot_metrics(self._data)


def snapshot_metrics(data: dict[str, Any]) -> Iterator[Metric]:
    yield from ingest_metrics(data.get("ingest") or [])
    jobs = GaugeMetricFamily("rota_jobs", "Jobs by queue and state.", labels=["queue", "state"])
    for queue, counts in sorted(data["jobs"]["by_queue"].items()):
        for state in JobState:
            jobs.add_metric([queue, state.value], counts.get(state.value, 0))
    yield jobs

    nodes = GaugeMetricFamily("rota_nodes", "Worker nodes by state.", labels=["state"])
    by_state = {s.value: 0 for s in NodeState}
    for n in data["nodes"]:
        by_state[n["state"]] = by_state.get(n["state"], 0) + 1
    for node_state, count in by_state.items():
        nodes.add_metric([node_state], count)
    yield nodes

    labels = ["node", "name"]
    slots = GaugeMetricFamily("rota_node_slots", "Job slots of a node.", labels=labels)
    used = GaugeMetricFamily("rota_node_slots_used", "Jobs running on a node.", labels=labels)
    assigned = GaugeMetricFamily(
        "rota_node_jobs_assigned", "Jobs placed on a node, not started yet.", labels=labels
    )
    heartbeat = GaugeMetricFamily(
        "rota_node_heartbeat_age_seconds", "Seconds since the node's last heartbeat.", labels=labels
    )
    up = GaugeMetricFamily(
        "rota_node_info", "1 per node, with its state.", labels=[*labels, "state"]
    )
    res_labels = [*labels, "resource"]
    capacity = GaugeMetricFamily(
        "rota_node_resource_capacity", "A node's capacity of a resource.", labels=res_labels
    )
    res_used = GaugeMetricFamily(
        "rota_node_resource_used", "A resource in use by a node's jobs.", labels=res_labels
    )
    for n in data["nodes"]:
        key = [n["id"], n["name"]]
        slots.add_metric(key, n["slots"])
        used.add_metric(key, n["running"])
        assigned.add_metric(key, n["assigned"])
        heartbeat.add_metric(key, n["heartbeat_age"])
        up.add_metric([*key, n["state"]], 1)
        for resource, total in sorted(n["resources"].items()):
            capacity.add_metric([*key, resource], total)
            res_used.add_metric([*key, resource], n["used"].get(resource, 0.0))
    yield from (slots, used, assigned, heartbeat, up, capacity, res_used)

    yield from coordinator_metrics(data)

    s = data["scheduler"]
    leader = GaugeMetricFamily(
        "rota_scheduler_leader", "1 for the scheduler holding the leader lease.", labels=["holder"]
    )
    if s["leader"]:
        leader.add_metric([s["leader"]], 1)
    yield leader
    token = GaugeMetricFamily(
        "rota_scheduler_leader_token",
        "Fencing token of the leader lease; it grows at every change of leader.",
    )
    token.add_metric([], s["token"] or 0)
    yield token
    yield _gauge(
        "rota_scheduler_placements_per_second",
        "Placement decisions per second (the leader's last 10 s).",
        s["decisions_per_s"],
    )
    yield _gauge("rota_scheduler_waiting_jobs", "Pending jobs waiting for room.", s.get("waiting"))
    placed = CounterMetricFamily(
        "rota_scheduler_placed", "Jobs placed by the current leader since it took over."
    )
    placed.add_metric([], s.get("placed_total") or 0)
    yield placed
    yield _by_reason(
        "rota_scheduler_unplaceable_jobs",
        "Pending jobs no node can take, by reason.",
        s.get("unplaceable"),
    )
    yield _by_reason(
        "rota_scheduler_held_jobs",
        "Pending jobs held back by a concurrency key or a rate limit, by reason.",
        s.get("held"),
    )
    totals = s.get("totals") or {}
    for stat, name, doc in _SCHEDULER_TOTALS:
        counter = CounterMetricFamily(name, doc)
        counter.add_metric([], totals.get(stat) or 0)
        yield counter


def coordinator_metrics(data: dict[str, Any]) -> Iterator[Metric]:
    """The coordinator in use, the leader's session state and each node's session."""
    coord = data.get("coordinator") or {"kind": "store", "url": "store"}
    info = GaugeMetricFamily(
        "rota_coordinator_info", "1, labelled with the coordinator in use.", labels=["kind", "url"]
    )
    info.add_metric([str(coord.get("kind")), str(coord.get("url"))], 1)
    yield info
    session = data["scheduler"].get("session") or {}
    leader = GaugeMetricFamily(
        "rota_scheduler_coordinator_session",
        "1 for the state of the leader's coordination session (connected, suspended, lost).",
        labels=["state"],
    )
    if session.get("state"):
        leader.add_metric([str(session["state"])], 1)
    yield leader
    nodes = GaugeMetricFamily(
        "rota_node_session_up",
        "1 if the node holds a coordination session (ZooKeeper znode, or store heartbeats).",
        labels=["node", "name"],
    )
    for n in data["nodes"]:
        nodes.add_metric([n["id"], n["name"]], 1 if n.get("session") else 0)
    yield nodes


def _by_reason(name: str, doc: str, rows: list[dict[str, Any]] | None) -> GaugeMetricFamily:
    """A gauge of job counts by reason from the scheduler's ``[{reason, jobs}]`` lists."""
    gauge = GaugeMetricFamily(name, doc, labels=["reason"])
    for row in rows or []:
        gauge.add_metric([str(row["reason"])], row["jobs"])
    return gauge


# Cumulative counts the scheduler publishes (carried from leader to leader, so they only
# reset when every scheduler restarts); the ``_total`` suffix is added by the exposition.
_SCHEDULER_TOTALS = (
    (
        "leader_changes",
        "rota_scheduler_leader_changes",
        "Times a scheduler took the leader lease.",
    ),
    (
        "nodes_reaped",
        "rota_scheduler_nodes_reaped",
        "Worker nodes declared dead for missed heartbeats.",
    ),
    (
        "lease_expiries",
        "rota_scheduler_lease_expiries",
        "Running jobs whose lease expired (node dead or silent): attempt counted, "
        "job retried or dead.",
    ),
    (
        "jobs_requeued",
        "rota_scheduler_jobs_requeued",
        "Assigned jobs of dead nodes handed back to pending untouched.",
    ),
)


def _gauge(name: str, doc: str, value: Any) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], float(value or 0))
    return g


def render(data: dict[str, Any] | None) -> bytes:
    """The text exposition of one snapshot, read from the store for this scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(data))
    return generate_latest(registry)


_INGEST_GAUGES = {
    "received": "Messages an ingest process took from its broker.",
    "stored": "Jobs an ingest process created.",
    "duplicates": "Redelivered messages whose job existed already.",
    "invalid": "Messages dead-lettered because they failed validation.",
    "refused": "Messages dead-lettered because the store refused their job.",
    "dead_letter_repeats": "Redelivered messages dead-lettered (again, if a copy was made).",
    "replies": "Outcomes an ingest process published (replies, result records).",
    "stored_per_s": "Jobs stored per second (over the last stats period).",
    "lag": "Messages waiting at the broker (queue depth or consumer lag).",
    "connected": "1 while the ingest process is connected to its broker.",
}


def ingest_metrics(processes: list[dict[str, Any]]) -> Iterator[Metric]:
    """``rota_ingest_*{process, kind, source}`` gauges, one series per ingest process."""
    labels = ["process", "kind", "source"]
    for field, doc in _INGEST_GAUGES.items():
        gauge = GaugeMetricFamily(f"rota_ingest_{field}", doc, labels=labels)
        for p in processes:
            value = p.get(field)
            if value is not None and not p.get("stale"):
                gauge.add_metric([p["id"], p["kind"], p["source"]], float(value))
        yield gauge
