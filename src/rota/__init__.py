"""rota: a distributed task scheduler for Python."""

from rota.app import Rota, Task, TaskCall
from rota.core.errors import (
    InvalidOption,
    InvalidPayload,
    JobCancelled,
    JobFailed,
    PayloadTooLarge,
    ResultTimeout,
    Retry,
    RotaError,
    SubmitError,
    UnknownTask,
)
from rota.core.states import JobState
from rota.handle import JobHandle
from rota.worker.cancel import cancel_requested
from rota.workflow import Chain, Group, Signature, WorkflowHandle, chain, group

__version__ = "0.1.0"

__all__ = [
    "Chain",
    "Group",
    "InvalidOption",
    "InvalidPayload",
    "JobCancelled",
    "JobFailed",
    "JobHandle",
    "JobState",
    "PayloadTooLarge",
    "ResultTimeout",
    "Retry",
    "Rota",
    "RotaError",
    "Signature",
    "SubmitError",
    "Task",
    "TaskCall",
    "UnknownTask",
    "WorkflowHandle",
    "cancel_requested",
    "chain",
    "group",
]
