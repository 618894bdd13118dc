"""How a worker node presents itself and behaves (:class:`WorkerConfig`)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from rota.app import Isolation
from rota.core.model import NodeSpec
from rota.core.resources import Resources
from rota.scheduler import SchedulerConfig


@dataclass(slots=True)
class WorkerConfig:
    """How a worker node presents itself and behaves. Durations are seconds."""

    name: str = ""
    concurrency: int = 8  # slots: jobs running at once
    prefetch: int | None = (
        None  # extra jobs the scheduler may assign ahead (default concurrency // 2)
    )
    processes: int | None = None  # pool processes for process-isolated sync tasks
    isolation: Isolation = "thread"  # where sync tasks without their own choice run
    threads: int | None = None  # threads for thread-isolated sync tasks (default: concurrency)
    resources: Resources = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    queues: tuple[str, ...] = ("default",)
    heartbeat_interval: float = 1.0
    lease_ttl: float = 5.0  # how long a running job's lease lasts without a heartbeat
    shutdown_grace: float = 10.0
    cancel_grace: float = 5.0  # a cancelled sync job's time to stop before it is killed
    scheduler: SchedulerConfig | None = None  # also stand for the scheduler role
    metrics_port: int | None = None  # serve Prometheus metrics here (0: any free port)
    metrics_host: str = "127.0.0.1"
    coordinator: str | None = None  # who decides liveness/leadership (default: the app's)

    def spec(self, node_id: str) -> NodeSpec:
        prefetch = self.prefetch if self.prefetch is not None else max(1, self.concurrency // 2)
        return NodeSpec(
            id=node_id,
            name=self.name or socket.gethostname(),
            slots=self.concurrency,
            prefetch=prefetch,
            resources=dict(self.resources),
            labels=dict(self.labels),
            queues=tuple(self.queues),
            host=socket.gethostname(),
            pid=os.getpid(),
        )
