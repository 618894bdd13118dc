"""rota: a distributed task scheduler for Python."""

from rota.app import Rota, Task, TaskCall
from rota.errors import (
    InvalidOption,
    InvalidPayload,
    JobFailed,
    PayloadTooLarge,
    ResultTimeout,
    Retry,
    RotaError,
    SubmitError,
    UnknownTask,
)
from rota.handle import JobHandle
from rota.states import JobState

__version__ = "0.1.0"

__all__ = [
    "InvalidOption",
    "InvalidPayload",
    "JobFailed",
    "JobHandle",
    "JobState",
    "PayloadTooLarge",
    "ResultTimeout",
    "Retry",
    "Rota",
    "RotaError",
    "SubmitError",
    "Task",
    "TaskCall",
    "UnknownTask",
]
