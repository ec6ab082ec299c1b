"""cauce: prepare data, train and tune, and serve models, from one spec, on one machine or on
a cluster engine.

What task code calls (``context``, ``report``, ``checkpoint``...) is imported at once and is
light; the launcher's entry points (``run``, ``submit``, ``Job``, ``plan``, ``JobResult``) are
imported on first use, so that ``import cauce`` in every task does not pay for SQLAlchemy.
"""

from typing import TYPE_CHECKING, Any

from cauce.errors import (
    CauceError,
    ClusterError,
    DataError,
    GangFailed,
    HistoryError,
    PlacementError,
    SpecError,
)
from cauce.runtime import Context, TrialPruned, checkpoint, context, heartbeat, report
from cauce.spec import JobSpec, load_job, parse_job

if TYPE_CHECKING:
    from cauce._api import plan, run
    from cauce._submit import Job, submit
    from cauce.gang import JobResult

__version__ = "0.1.0"

_LAZY = {
    "plan": "cauce._api",
    "run": "cauce._api",
    "submit": "cauce._submit",
    "Job": "cauce._submit",
    "JobResult": "cauce.gang",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cauce' has no attribute {name!r}")


__all__ = [
    "CauceError",
    "ClusterError",
    "Context",
    "DataError",
    "GangFailed",
    "HistoryError",
    "Job",
    "JobResult",
    "JobSpec",
    "PlacementError",
    "SpecError",
    "TrialPruned",
    "__version__",
    "checkpoint",
    "context",
    "heartbeat",
    "load_job",
    "parse_job",
    "plan",
    "report",
    "run",
    "submit",
]
