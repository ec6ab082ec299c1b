"""The entry points of hyperparameter search: a study of trials, each trial a gang of its own.

    result = cauce.tune.tune("job.yaml", trials=32, parallel=4)
    result.best.params, result.best.value

A study lives in the history database (Optuna's RDB storage, same SQLAlchemy URL as the history
store), so a study that was stopped, even with ``kill -9``, continues where it was when started
again. See ``docs/tuning.md``. The work is in ``_session.py``, imported on first call (it needs
the cluster, the history store and Optuna).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cauce.errors import SpecError
from cauce.spec import JobSpec, check_trials, job_spec
from cauce.tune.api import StudyInfo, StudyResult, TrialInfo, TuneConsole

__all__ = ["resolve_study", "studies", "trials", "tune"]

_STUDY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def tune(
    job: Any,
    *,
    trials: int | None = None,
    parallel: int | None = None,
    study: str | None = None,
    cluster: str | None = None,
    history: str | None = None,
    home: str | os.PathLike[str] | None = None,
    console: TuneConsole | None = None,
    poll_interval: float = 0.25,
    tracking_parent: Any = None,
    warm_starts: Any = None,
) -> StudyResult:
    """Run the study of a job (a :class:`~cauce.JobSpec` with a ``tune`` section, a mapping of
    its fields, or the path of its YAML file) until ``trials`` trials have completed or been pruned.

    ``trials`` and ``parallel`` override the spec's; ``study`` names the study (default: the
    job's name): running again with the same name continues it. ``poll_interval`` is how often
    each trial's reports are read (and the pruner asked). Failed trials are reported in the
    result, not raised; a bad spec raises :class:`~cauce.SpecError`. With MLflow tracking (the
    spec's ``tracking:`` or ``$MLFLOW_TRACKING_URI``) the study is a run, its trials child runs;
    ``tracking_parent`` (a :class:`cauce.tracking.RunLink`) hangs the study's run under another.
    ``warm_starts`` (a :class:`cauce.cluster.WarmStarts`): where the trials' tasks are forked
    from (``preload:``), left open for its owner to reuse and close (a pipeline shares one
    between its steps); by default the study's own, closed when it ends.
    """
    from cauce.tune._session import run_study

    return run_study(
        job,
        trials=trials,
        parallel=parallel,
        study=study,
        cluster=cluster,
        history=history,
        home=Path(home) if home is not None else None,
        console=console,
        poll_interval=poll_interval,
        tracking_parent=tracking_parent,
        warm=warm_starts,
    )


def trials(study: str, *, history: str | None = None) -> list[TrialInfo]:
    """Every trial of ``study``, by number."""
    from cauce.tune._session import read_trials

    return read_trials(study, history)


def studies(*, history: str | None = None) -> list[StudyInfo]:
    """Every study in the history database."""
    from cauce.tune._session import read_studies

    return read_studies(history)


def resolve_study(
    job: JobSpec | str | os.PathLike[str] | Mapping[str, Any],
    trials: int | None,
    parallel: int | None,
    study: str | None,
) -> tuple[JobSpec, int, int, str]:
    """The spec, the target number of trials, the parallelism and the study name, checked
    (``trials``, ``parallel`` and ``study`` override the spec's)."""
    spec = job_spec(job)
    tune = spec.tune
    if tune is None:
        raise SpecError(
            "tune",
            "is missing: cauce tune needs a tune: section with objective and space "
            "(see docs/tuning.md)",
            source=spec.source,
        )
    target = tune.trials if trials is None else trials
    if target < 1:
        raise SpecError("--trials", f"must be >= 1, got {target}", value=target)
    check_trials(tune, target, "--trials" if trials is not None else "tune.trials", spec.source)
    width = tune.parallel if parallel is None else parallel
    if width < 1:
        raise SpecError("--parallel", f"must be >= 1, got {width}", value=width)
    name = spec.name if study is None else study  # "" is refused, not taken as unset
    if not _STUDY_RE.match(name):
        raise SpecError(
            "--study",
            f"must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit, "
            f"got {name!r}",
            value=name,
        )
    return spec, target, width, name
