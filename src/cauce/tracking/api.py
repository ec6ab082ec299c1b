"""Where tracking goes: the MLflow server and experiment of a job, a study or a pipeline.

The ``tracking:`` section of the spec wins over the environment: its ``uri`` over
``$MLFLOW_TRACKING_URI`` and its ``experiment`` over ``$MLFLOW_EXPERIMENT_NAME``. Without a
section, ``$MLFLOW_TRACKING_URI`` alone turns tracking on; ``tracking: false`` turns it off.
Resolving does no I/O and does not import mlflow; it checks that mlflow is installed, so that a
job asking for tracking fails at once, in one line, rather than after it ran.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass

from cauce.errors import SpecError, TrackingError
from cauce.spec import TrackingSpec

__all__ = [
    "ADDED_ENV",
    "MISSING",
    "RunLink",
    "Target",
    "check_installed",
    "resolve_target",
    "without_tracking_env",
]

MISSING = (
    "MLflow tracking needs the mlflow client, which is not installed: pip install 'cauce[mlflow]'"
)

#: The MLflow settings cauce put in its own process's environment (for mlflow, which reads
#: them there), with their values: :func:`without_tracking_env` keeps them from the tasks.
ADDED_ENV: dict[str, str] = {}


def without_tracking_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the MLflow settings cauce added to its own process's environment:
    the environment for the tasks a driver or a worker pool starts."""
    return {key: value for key, value in environ.items() if ADDED_ENV.get(key) != value}


@dataclass(frozen=True)
class Target:
    """An MLflow tracking server (``uri``) and the experiment runs go to."""

    uri: str
    experiment: str


@dataclass(frozen=True)
class RunLink:
    """A run that child runs hang under (``mlflow.parentRunId``), in its target; ``run_id``
    None when the parent could not be created (the server was down): children then are
    top-level runs of the same experiment."""

    target: Target
    run_id: str | None


def check_installed() -> None:
    """Raise :class:`TrackingError` naming the extra when mlflow cannot be imported here."""
    try:
        found = importlib.util.find_spec("mlflow") is not None
    except ValueError:  # sys.modules["mlflow"] is None: its import is blocked
        found = False
    if not found:
        raise TrackingError(MISSING)


def resolve_target(
    tracking: TrackingSpec | None, environ: Mapping[str, str], default_experiment: str
) -> Target | None:
    """The target of a spec's ``tracking:`` section and the environment; None for no tracking."""
    if tracking is not None and not tracking.enabled:
        return None
    uri = (tracking.uri if tracking is not None else None) or environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        if tracking is None:
            return None
        raise SpecError(
            "tracking.uri",
            "is not set and neither is $MLFLOW_TRACKING_URI: give tracking: {uri: "
            "http://HOST:5000} or export MLFLOW_TRACKING_URI",
        )
    experiment = (
        (tracking.experiment if tracking is not None else None)
        or environ.get("MLFLOW_EXPERIMENT_NAME")
        or default_experiment
    )
    check_installed()
    return Target(uri, experiment)
