"""The scheduler: the fenced leader loop (``leader``), pure placement (``placement``),
limits (``limits``), slot reservations (``reservations``) and periodic ticks (``periodic``)."""

from rota.scheduler.config import STATS_NAME, SchedulerConfig
from rota.scheduler.leader import Scheduler

__all__ = ["STATS_NAME", "Scheduler", "SchedulerConfig"]
