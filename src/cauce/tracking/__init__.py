"""MLflow tracking and model registry: cauce keeps its own history, MLflow gets a copy.

A job is an MLflow run (params, every ``cauce.report`` as metrics with its step, tags, the
task logs as artifacts), a study a parent run with a child run per trial, a pipeline one parent
run for its steps with the train step's model registered as a model version with its lineage.
Everything is sent from the driver by a thread of its own, in batches; a tracking outage never
fails a job: it is warned of once, and what was not sent is spooled to the run folder for
``cauce mlflow sync``. mlflow itself is imported lazily: install it with
``pip install 'cauce[mlflow]'``. See docs/tracking.md.
"""

from cauce.tracking._job import JobTracking, open_job_tracking
from cauce.tracking._models import is_registry_uri, registry_model_dir
from cauce.tracking._pipeline import PipelineTracking, open_pipeline_tracking
from cauce.tracking._study import StudyTracking, open_study_tracking
from cauce.tracking._sync import SPOOL_FILE, SyncResult, replay
from cauce.tracking._tracker import Tracker
from cauce.tracking.api import (
    RunLink,
    Target,
    check_installed,
    resolve_target,
    without_tracking_env,
)

__all__ = [
    "SPOOL_FILE",
    "JobTracking",
    "PipelineTracking",
    "RunLink",
    "StudyTracking",
    "SyncResult",
    "Target",
    "Tracker",
    "check_installed",
    "is_registry_uri",
    "open_job_tracking",
    "open_pipeline_tracking",
    "open_study_tracking",
    "registry_model_dir",
    "replay",
    "resolve_target",
    "without_tracking_env",
]
