"""The ``tune:`` section of a job file: the search space, the objective and how to search.

Plain frozen data; nothing here imports Optuna (``cauce.tune`` turns these specs into samplers,
pruners and distributions). ``_tune_parse`` and ``_tune_space`` validate the section: every
refusal is a :class:`SpecError` naming the field path (``tune.space.lr.low``), the value and the
fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cauce.errors import SpecError

__all__ = [
    "PARAM_TYPES",
    "Objective",
    "ParamSpec",
    "PrunerSpec",
    "SamplerSpec",
    "TuneSpec",
    "check_trials",
]

PARAM_TYPES = ("uniform", "loguniform", "int", "choice")

#: A value of a ``choice`` parameter.
Choice = str | int | float | bool

DEFAULT_TRIALS = 20
DEFAULT_MAX_FAILURES = 3
DEFAULT_PRUNE_GRACE = 5.0
#: Most points a grid search may have (the sampler lists them all).
MAX_GRID = 1_000_000


@dataclass(frozen=True)
class ParamSpec:
    """One dimension of the search space.

    ``uniform``: a float in [low, high] (on a grid of ``step`` if given); ``loguniform``: a float
    in [low, high], sampled on a log scale (low > 0); ``int``: an integer in [low, high] with
    ``step`` (or on a log scale with ``log``); ``choice``: one of ``values``.
    """

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    values: tuple[Choice, ...] = ()

    @property
    def env_name(self) -> str:
        """The variable a task finds the value in: ``CAUCE_PARAM_<NAME>``."""
        return f"CAUCE_PARAM_{self.name.upper()}"

    def grid_count(self) -> int | None:
        """How many values :meth:`grid` has (without making them), or None when infinitely many."""
        if self.type == "choice":
            return len(self.values)
        if self.low is None or self.high is None or self.type not in ("int", "uniform"):
            return None
        if self.type == "uniform" and self.step is None:
            return None
        return round((self.high - self.low) / (self.step or 1)) + 1

    def grid(self) -> tuple[Choice, ...] | None:
        """Every value this parameter can take, or None when there are infinitely many."""
        if self.type == "choice":
            return self.values
        if self.type == "int":
            assert self.low is not None and self.high is not None
            step = int(self.step or 1)
            return tuple(range(int(self.low), int(self.high) + 1, step))
        if self.type == "uniform" and self.step is not None:
            assert self.low is not None and self.high is not None
            count = round((self.high - self.low) / self.step) + 1
            return tuple(round(self.low + i * self.step, 12) for i in range(count))
        return None


@dataclass(frozen=True)
class Objective:
    """What a trial is judged by: a metric the tasks report with ``cauce.report``, to minimize
    (``min``) or maximize (``max``), taken from ``task`` (None: the task of rank 0)."""

    metric: str
    direction: str = "min"
    task: str | None = None


@dataclass(frozen=True)
class SamplerSpec:
    """How the next trial's parameters are chosen: ``tpe`` (default), ``random``, ``grid``
    (every combination; needs a finite space) or ``cmaes``."""

    type: str = "tpe"
    seed: int | None = None
    #: Trials sampled at random before TPE or CMA-ES take over (None: the sampler's default).
    startup_trials: int | None = None


@dataclass(frozen=True)
class PrunerSpec:
    """When a running trial is stopped early: ``hyperband`` (default: several brackets of
    successive halving, from ``min_steps`` up, chosen from the measurements of
    ``docs/tuning.md``), ``asha`` (asynchronous successive halving), ``median`` or ``none``.
    Steps are the ``step`` of ``cauce.report``."""

    type: str = "hyperband"
    min_steps: int = 1
    max_steps: int | None = None
    reduction_factor: int = 3
    warmup_steps: int = 0
    startup_trials: int = 5


@dataclass(frozen=True)
class TuneSpec:
    """A hyperparameter search over a job: ``trials`` trials (finished or pruned), ``parallel``
    at a time, each a gang of its own."""

    objective: Objective
    space: tuple[ParamSpec, ...]
    trials: int = DEFAULT_TRIALS
    parallel: int = 1
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    #: How many failed trials a run of ``cauce tune`` tolerates; one more stops the study.
    max_failures: int = DEFAULT_MAX_FAILURES
    #: Seconds a pruned trial gets to stop by itself (at its next ``cauce.report``) before its
    #: gang is stopped.
    prune_grace: float = DEFAULT_PRUNE_GRACE
    #: Points to try first, in order, before the sampler chooses (a known good configuration,
    #: say): each maps some or all parameters to values; the sampler fills in the others.
    start: tuple[Mapping[str, Choice], ...] = ()
    #: ``module:function``: each trial calls this function (with the trial's parameters)
    #: instead of running the job's command; on the local cluster, in worker processes that
    #: imported the module once and run trial after trial. Single-process jobs only.
    entrypoint: str | None = None

    def param(self, name: str) -> ParamSpec:
        for param in self.space:
            if param.name == name:
                return param
        raise KeyError(name)

    def grid_size(self) -> int | None:
        """The number of points of the grid, or None if some parameter is continuous."""
        size = 1
        for param in self.space:
            count = param.grid_count()
            if count is None:
                return None
            size *= count
        return size


def check_trials(spec: TuneSpec, trials: int, path: str, source: str = "") -> None:
    """Refuse more trials than a grid has points (``path`` names where the number came from)."""
    if spec.sampler.type != "grid":
        return
    size = spec.grid_size()
    if size is not None and trials > size:
        raise SpecError(
            path,
            f"must be <= {size}, the number of points of the grid (sampler grid), got {trials}",
            value=trials,
            source=source,
        )
