"""cauce: prepare data, train and tune, and serve models, from one spec, on one machine or on
a cluster engine."""

from cauce._api import plan, run
from cauce.errors import (
    CauceError,
    ClusterError,
    DataError,
    GangFailed,
    HistoryError,
    PlacementError,
    SpecError,
)
from cauce.gang import JobResult
from cauce.runtime import Context, TrialPruned, checkpoint, context, heartbeat, report
from cauce.spec import JobSpec, load_job, parse_job

__version__ = "0.1.0"

__all__ = [
    "CauceError",
    "ClusterError",
    "Context",
    "DataError",
    "GangFailed",
    "HistoryError",
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
]
