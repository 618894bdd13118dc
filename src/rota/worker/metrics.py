"""A worker node's own Prometheus metrics (``rota worker ... --metrics-port N``).

Each :class:`WorkerMetrics` owns a ``CollectorRegistry`` (never the process-global one),
so several nodes in one process, or a node and a test, never share a series. The node
records into it as jobs start and end; :meth:`WorkerMetrics.serve` exposes it over HTTP
from a daemon thread. Needs ``prometheus-client`` (``pip install rota[metrics]``).

Series (labels ``task`` and ``queue`` unless said otherwise):

* ``rota_worker_jobs_started_total``: attempts this node started;
* ``rota_worker_jobs_total{outcome}``: attempts this node reported and the store accepted,
  by how they ended (:class:`rota.core.outcomes.OutcomeLabel`): ``succeeded``; ``failed`` (an error, a timeout or a crash, with
  attempts left: the job will be retried); ``retried`` (the task raised ``Retry``, with
  attempts left); ``dead`` (no attempts left, or an error no attempt can fix); ``cancelled``;
  and ``lease_lost`` (the outcome was dropped or refused: the lease had passed on);
  ``released`` (handed back unfinished at shutdown; the attempt does not count);
* ``rota_worker_job_duration_seconds``: run time of the attempts that ended here;
* ``rota_worker_leases_lost_total{reason}``: leases lost, ``reason`` ``heartbeat`` (the
  heartbeat said so), ``refused`` (the store refused the outcome: a newer token) or
  ``node_dead`` (the node had been declared dead);
* ``rota_worker_jobs_in_flight`` (no labels): attempts running now;
* ``rota_worker_node_info{node,name}``: 1, naming the node id of this process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from rota.core.outcomes import OutcomeLabel

LeaseLossReason = Literal["heartbeat", "refused", "node_dead"]

DURATION_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    float("inf"),
)


class WorkerMetrics:
    """One node's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        job_labels = ["task", "queue"]
        self.started = Counter(
            "rota_worker_jobs_started",
            "Job attempts this node started.",
            job_labels,
            registry=self.registry,
        )
        self.outcomes = Counter(
            "rota_worker_jobs",
            "Job attempts this node ended, by outcome (failed: will be retried; retried: the "
            "task raised Retry; dead: no attempt left; lease_lost: outcome dropped or refused).",
            [*job_labels, "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "rota_worker_job_duration_seconds",
            "Run time of the job attempts that ended on this node.",
            job_labels,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.leases_lost = Counter(
            "rota_worker_leases_lost",
            "Job leases this node lost (heartbeat: told by a heartbeat; refused: outcome "
            "refused for a newer token; node_dead: the node had been declared dead).",
            [*job_labels, "reason"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "rota_worker_jobs_in_flight",
            "Job attempts running on this node.",
            registry=self.registry,
        )
        self.node_info = Gauge(
            "rota_worker_node_info",
            "1, with this process's node id and name.",
            ["node", "name"],
            registry=self.registry,
        )
        self._node: tuple[str, str] | None = None
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # ---- recording (event loop thread) ------------------------------------------------
    def set_node(self, node_id: str, name: str) -> None:
        """This process registered (again) as ``node_id``."""
        if self._node is not None:
            self.node_info.remove(*self._node)
        self._node = (node_id, name)
        self.node_info.labels(node_id, name).set(1)

    def track_in_flight(self, count: Callable[[], int]) -> None:
        """Read the in-flight gauge from ``count()`` at every scrape."""
        self.in_flight.set_function(lambda: float(count()))

    def job_started(self, task: str, queue: str) -> None:
        self.started.labels(task, queue).inc()

    def job_ended(self, task: str, queue: str, outcome: OutcomeLabel) -> None:
        self.outcomes.labels(task, queue, outcome).inc()

    def job_ran(self, task: str, queue: str, seconds: float) -> None:
        self.duration.labels(task, queue).observe(seconds)

    def lease_lost(self, task: str, queue: str, reason: LeaseLossReason) -> None:
        self.leases_lost.labels(task, queue, reason).inc()
        self.outcomes.labels(task, queue, OutcomeLabel.LEASE_LOST).inc()

    # ---- exposing ---------------------------------------------------------------------
    def render(self) -> bytes:
        """The text exposition of this node's metrics."""
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` (any path, in fact) on ``host:port`` from a daemon thread;
        returns the bound port (``port`` 0 picks a free one)."""
        if self._server is not None:
            raise RuntimeError("the metrics server is already running")
        self._server, self._thread = start_http_server(port, host, registry=self.registry)
        return int(self._server.server_port)

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_port)

    def fileno(self) -> int | None:
        """The listening socket (forked pool children close it)."""
        return None if self._server is None else self._server.fileno()

    def close(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
