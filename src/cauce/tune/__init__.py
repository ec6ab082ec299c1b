"""Hyperparameter search: trials as gangs, Optuna's samplers and pruners, resumable studies.

    import cauce.tune
    result = cauce.tune.tune("job.yaml", trials=32, parallel=4)

The search is described by the job file's ``tune:`` section (``docs/tuning.md``). Optuna is
needed (``pip install 'cauce[tune]'``) and imported only when a study runs or is read.
"""

from cauce.spec import (
    Objective,
    ParamSpec,
    PrunerSpec,
    SamplerSpec,
    TuneSpec,
    parse_tune,
)
from cauce.tune._display import cause_lines, describe_params, first_line, make_console
from cauce.tune._entry import resolve_study, studies, trials, tune
from cauce.tune._fixed import with_params
from cauce.tune._optuna import import_optuna, quiet_optuna
from cauce.tune.api import (
    StudyInfo,
    StudyProgress,
    StudyResult,
    StudyStatus,
    TrialInfo,
    TrialState,
    TuneConsole,
)

__all__ = [
    "Objective",
    "ParamSpec",
    "PrunerSpec",
    "SamplerSpec",
    "StudyInfo",
    "StudyProgress",
    "StudyResult",
    "StudyStatus",
    "TrialInfo",
    "TrialState",
    "TuneConsole",
    "TuneSpec",
    "cause_lines",
    "describe_params",
    "first_line",
    "import_optuna",
    "make_console",
    "parse_tune",
    "quiet_optuna",
    "resolve_study",
    "studies",
    "trials",
    "tune",
    "with_params",
]
