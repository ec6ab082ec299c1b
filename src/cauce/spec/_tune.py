"""The ``tune:`` section of a job file: the search space, the objective and how to search.

Plain frozen data and its validation; nothing here imports Optuna (``cauce.tune`` turns these
specs into samplers, pruners and distributions). Every refusal is a :class:`SpecError` naming
the field path (``tune.space.lr.low``), the value and the fix.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cauce.errors import SpecError
from cauce.spec._values import (
    MAX_COUNT,
    MAX_PAUSE,
    MAX_SEED,
    MAX_TUNE_VALUE,
    integer_problem,
    number_problem,
    short_repr,
)

__all__ = [
    "PARAM_TYPES",
    "PRUNERS",
    "SAMPLERS",
    "Objective",
    "ParamSpec",
    "PrunerSpec",
    "SamplerSpec",
    "TuneSpec",
    "parse_tune",
]

PARAM_TYPES = ("uniform", "loguniform", "int", "choice")
SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("asha", "hyperband", "median", "none")

#: A value of a ``choice`` parameter.
Choice = str | int | float | bool

_TUNE_KEYS = (
    "objective",
    "space",
    "trials",
    "parallel",
    "sampler",
    "pruner",
    "max_failures",
    "prune_grace",
    "start",
)
_OBJECTIVE_KEYS = ("metric", "direction", "task")
_PARAM_KEYS = {
    "uniform": ("type", "low", "high", "step"),
    "loguniform": ("type", "low", "high"),
    "int": ("type", "low", "high", "step", "log"),
    "choice": ("type", "values"),
}
_SAMPLER_KEYS = {
    "tpe": ("type", "seed", "startup_trials"),
    "random": ("type", "seed"),
    "grid": ("type", "seed"),
    "cmaes": ("type", "seed", "startup_trials"),
}
_PRUNER_KEYS = {
    "asha": ("type", "min_steps", "reduction_factor"),
    "hyperband": ("type", "min_steps", "max_steps", "reduction_factor"),
    "median": ("type", "warmup_steps", "startup_trials"),
    "none": ("type",),
}
_PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_METRIC_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,120}$")

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
    """When a running trial is stopped early: ``asha`` (asynchronous successive halving,
    default), ``hyperband``, ``median`` or ``none``. Steps are the ``step`` of
    ``cauce.report``."""

    type: str = "asha"
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


def _outside(param: ParamSpec, value: object) -> str:
    """Why ``value`` is not a value of ``param``, or ""."""
    if param.type == "choice":
        return (
            ""
            if value in param.values
            else f"must be one of {short_repr(list(param.values))}, got {short_repr(value)}"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {short_repr(value)}"
    if param.type == "int" and not isinstance(value, int):
        return f"must be an integer, got {short_repr(value)}"
    assert param.low is not None and param.high is not None
    if not param.low <= value <= param.high:
        return (
            f"must be within [{param.low:g}, {param.high:g}], the parameter's range, "
            f"got {short_repr(value)}"
        )
    return ""


def parse_tune(value: object, *, task_ids: Sequence[str] = (), source: str = "") -> TuneSpec:
    """Validate the ``tune:`` section. ``task_ids`` are the gang's tasks (``worker-0``, ...),
    for checking ``objective.task``."""
    return _TuneParser(source).tune(value, tuple(task_ids))


class _TuneParser:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, message: str, value: object = None) -> SpecError:
        return SpecError(path, message, value=value, source=self.source)

    def mapping(self, value: object, path: str, example: str) -> Mapping[Any, Any]:
        if not isinstance(value, Mapping):
            raise self.error(path, f"must be a mapping like {example}, got {_show(value)}", value)
        return value

    def check_keys(self, data: Mapping[Any, Any], known: Sequence[str], path: str) -> None:
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.error(
                    f"{path}.{key}", f"is not a known field; {hint}known fields: {', '.join(known)}"
                )

    def integer(self, value: object, path: str, *, minimum: int, maximum: int = MAX_COUNT) -> int:
        problem = integer_problem(value, minimum=minimum, maximum=maximum)
        if problem:
            raise self.error(path, problem, value)
        return value  # type: ignore[return-value]

    def number(self, value: object, path: str, maximum: float = MAX_TUNE_VALUE) -> float:
        problem = number_problem(value, minimum=-MAX_TUNE_VALUE, maximum=maximum)
        if problem:
            raise self.error(path, problem, value)
        return float(value)  # type: ignore[arg-type]

    def kind(self, value: object, path: str, known: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in known:
            close = difflib.get_close_matches(str(value), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.error(
                path, f"must be one of {', '.join(known)}, got {short_repr(value)}{hint}", value
            )
        return value

    # --- the section ---------------------------------------------------------------------------

    def tune(self, value: object, task_ids: tuple[str, ...]) -> TuneSpec:
        data = self.mapping(
            value, "tune", "{objective: {metric: val_loss, direction: min}, space: {...}}"
        )
        self.check_keys(data, _TUNE_KEYS, "tune")
        if "objective" not in data:
            raise self.error(
                "tune.objective", "is missing: add objective: {metric: val_loss, direction: min}"
            )
        if "space" not in data:
            raise self.error(
                "tune.space",
                "is missing: add space: {lr: {type: loguniform, low: 0.0001, high: 0.1}}",
            )
        objective = self.objective(data["objective"], task_ids)
        space = self.space(data["space"])
        sampler = self.sampler(data.get("sampler"))
        pruner = self.pruner(data.get("pruner"))
        parallel = self.integer(data.get("parallel", 1), "tune.parallel", minimum=1)
        max_failures = self.integer(
            data.get("max_failures", DEFAULT_MAX_FAILURES), "tune.max_failures", minimum=0
        )
        grace = self.number(
            data.get("prune_grace", DEFAULT_PRUNE_GRACE), "tune.prune_grace", maximum=MAX_PAUSE
        )
        if grace < 0:
            raise self.error("tune.prune_grace", f"must be >= 0 seconds, got {grace:g}", grace)
        spec = TuneSpec(
            objective=objective,
            space=space,
            parallel=parallel,
            sampler=sampler,
            pruner=pruner,
            max_failures=max_failures,
            prune_grace=grace,
            start=self.start(data.get("start"), space),
        )
        if sampler.type == "grid":
            for param in space:
                if param.grid_count() is None:
                    raise self.error(
                        f"tune.space.{param.name}",
                        f"cannot be searched by the grid sampler: a {param.type} without step "
                        "has no finite set of values; give step, use type: choice with the "
                        "values to try, or another sampler",
                    )
        if sampler.type == "cmaes" and all(param.type == "choice" for param in space):
            raise self.error(
                "tune.sampler",
                "cmaes needs at least one uniform, loguniform or int parameter; every parameter "
                "is a choice: use tpe, random or grid",
            )
        grid = spec.grid_size() if sampler.type == "grid" else None
        if grid is not None and grid > MAX_GRID:
            raise self.error(
                "tune.space",
                f"has a grid of {grid:.3g} points, more than {MAX_GRID} (sampler grid): "
                "use fewer values, larger steps or another sampler",
            )
        default_trials = grid if grid is not None else DEFAULT_TRIALS
        trials = self.integer(data.get("trials", default_trials), "tune.trials", minimum=1)
        check_trials(spec, trials, "tune.trials", self.source)
        return replace(spec, trials=trials)

    def start(
        self, value: object, space: tuple[ParamSpec, ...]
    ) -> tuple[Mapping[str, Choice], ...]:
        """``start:``, a list of points, each value checked against its parameter."""
        if value is None:
            return ()
        example = "[{lr: 0.005, batch_size: 1024}]"
        if not isinstance(value, list):
            raise self.error("tune.start", f"must be a list of points like {example}", value)
        params = {p.name: p for p in space}
        points = []
        for i, point in enumerate(value):
            data = self.mapping(point, f"tune.start[{i}]", example)
            for name, given in data.items():
                where = f"tune.start[{i}].{name}"
                if name not in params:
                    raise self.error(
                        where, f"is not a parameter of tune.space ({', '.join(params)})", name
                    )
                problem = _outside(params[name], given)
                if problem:
                    raise self.error(where, problem, given)
            points.append({str(k): v for k, v in data.items()})
        return tuple(points)

    def objective(self, value: object, task_ids: tuple[str, ...]) -> Objective:
        data = self.mapping(value, "tune.objective", "{metric: val_loss, direction: min}")
        self.check_keys(data, _OBJECTIVE_KEYS, "tune.objective")
        metric = data.get("metric")
        if not isinstance(metric, str) or not _METRIC_RE.match(metric):
            raise self.error(
                "tune.objective.metric",
                "must be the name of a metric the tasks report with cauce.report(step, "
                f"NAME=value), like val_loss, got {short_repr(metric)}",
                metric,
            )
        direction = data.get("direction")
        if direction not in ("min", "max"):
            raise self.error(
                "tune.objective.direction",
                f"must be min or max (is a smaller {metric} better, or a larger one?), "
                f"got {short_repr(direction)}",
                direction,
            )
        task = data.get("task")
        if task is not None and (not isinstance(task, str) or (task_ids and task not in task_ids)):
            known = ", ".join(task_ids[:8]) + (", ..." if len(task_ids) > 8 else "")
            known = known or "the gang's tasks"
            raise self.error(
                "tune.objective.task",
                f"must be one of {known} (the task whose reports are the objective; default: "
                f"rank 0's), got {short_repr(task)}",
                task,
            )
        return Objective(metric=metric, direction=str(direction), task=task)

    def space(self, value: object) -> tuple[ParamSpec, ...]:
        example = "{lr: {type: loguniform, low: 0.0001, high: 0.1}}"
        data = self.mapping(value, "tune.space", example)
        if not data:
            raise self.error("tune.space", f"is empty: give at least one parameter, like {example}")
        params: list[ParamSpec] = []
        env_names: dict[str, str] = {}
        for name, body in data.items():
            path = f"tune.space.{name}"
            if not isinstance(name, str) or not _PARAM_NAME_RE.match(name):
                raise self.error(
                    path,
                    "is not a valid parameter name: use letters, digits and '_', starting with "
                    "a letter or '_' (it becomes CAUCE_PARAM_<NAME> and {name} in the command)",
                    name,
                )
            param = self.param(name, body, path)
            other = env_names.get(param.env_name)
            if other is not None:
                raise self.error(
                    path,
                    f"clashes with tune.space.{other}: both become {param.env_name}; rename one",
                )
            env_names[param.env_name] = name
            params.append(param)
        return tuple(params)

    def param(self, name: str, value: object, path: str) -> ParamSpec:
        data = self.mapping(value, path, "{type: uniform, low: 0.0, high: 1.0}")
        if "type" not in data:
            raise self.error(
                f"{path}.type", f"is missing: give one of {', '.join(PARAM_TYPES)}", None
            )
        kind = self.kind(data["type"], f"{path}.type", PARAM_TYPES)
        self.check_keys(data, _PARAM_KEYS[kind], path)
        if kind == "choice":
            return ParamSpec(name=name, type=kind, values=self.choices(data.get("values"), path))
        for key in ("low", "high"):
            if key not in data:
                raise self.error(f"{path}.{key}", f"is missing: {kind} needs low and high")
        if kind == "int":
            return self.int_param(name, data, path)
        low = self.number(data["low"], f"{path}.low")
        high = self.number(data["high"], f"{path}.high")
        if kind == "loguniform" and low <= 0:
            raise self.error(f"{path}.low", f"must be > 0 for loguniform, got {low:g}", low)
        if high <= low:
            raise self.error(
                f"{path}.high", f"must be greater than low ({low:g}), got {high:g}", high
            )
        step = None
        if data.get("step") is not None:
            step = self.number(data["step"], f"{path}.step")
            if step <= 0:
                raise self.error(f"{path}.step", f"must be > 0, got {step:g}", step)
            count = (high - low) / step
            if count > MAX_COUNT:
                raise self.error(
                    f"{path}.step",
                    f"makes {count:g} steps from low to high, more than {MAX_COUNT}: use a larger "
                    "step or no step",
                    step,
                )
            if abs(count - round(count)) > 1e-9 * max(1.0, count):
                raise self.error(
                    f"{path}.step",
                    f"must divide high - low ({high - low:g}) into whole steps, got {step:g}; "
                    "adjust high or step",
                    step,
                )
        return ParamSpec(name=name, type=kind, low=low, high=high, step=step)

    def int_param(self, name: str, data: Mapping[Any, Any], path: str) -> ParamSpec:
        low = self.whole(data["low"], f"{path}.low")
        high = self.whole(data["high"], f"{path}.high")
        if high <= low:
            raise self.error(f"{path}.high", f"must be greater than low ({low}), got {high}", high)
        log = data.get("log", False)
        if not isinstance(log, bool):
            raise self.error(f"{path}.log", f"must be true or false, got {short_repr(log)}", log)
        step = self.integer(data.get("step", 1), f"{path}.step", minimum=1)
        if log and low < 1:
            raise self.error(f"{path}.low", f"must be >= 1 with log: true, got {low}", low)
        if log and step != 1:
            raise self.error(f"{path}.step", f"must be 1 with log: true, got {step}", step)
        if (high - low) % step:
            raise self.error(
                f"{path}.step",
                f"must divide high - low ({high - low}) into whole steps, got {step}; "
                "adjust high or step",
                step,
            )
        return ParamSpec(
            name=name, type="int", low=float(low), high=float(high), step=float(step), log=log
        )

    def whole(self, value: object, path: str) -> int:
        if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_TUNE_VALUE:
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_TUNE_VALUE:
            raise self.error(
                path, f"must be within +-{MAX_TUNE_VALUE:g}, got {short_repr(value)}", value
            )
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(
                path, f"must be a whole number for type int, got {short_repr(value)}", value
            )
        return value

    def choices(self, value: object, path: str) -> tuple[Choice, ...]:
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(item, str | int | float | bool) for item in value)
        ):
            raise self.error(
                f"{path}.values",
                f"must be a non-empty list of strings, numbers or booleans, got {_show(value)}",
                value,
            )
        seen: list[Choice] = []
        for item in value:
            if any(type(item) is type(old) and item == old for old in seen):
                raise self.error(f"{path}.values", f"lists {short_repr(item)} twice", value)
            seen.append(item)
        return tuple(seen)

    def sampler(self, value: object) -> SamplerSpec:
        if value is None:
            return SamplerSpec()
        data: Mapping[Any, Any] = {"type": value} if isinstance(value, str) else value  # type: ignore[assignment]
        data = self.mapping(data, "tune.sampler", "tpe or {type: tpe, seed: 1}")
        kind = self.kind(data.get("type", "tpe"), "tune.sampler.type", SAMPLERS)
        self.check_keys(data, _SAMPLER_KEYS[kind], "tune.sampler")
        seed = data.get("seed")
        if seed is not None:
            seed = self.integer(seed, "tune.sampler.seed", minimum=0, maximum=MAX_SEED)
        startup = data.get("startup_trials")
        if startup is not None:
            startup = self.integer(startup, "tune.sampler.startup_trials", minimum=0)
        return SamplerSpec(type=kind, seed=seed, startup_trials=startup)

    def pruner(self, value: object) -> PrunerSpec:
        if value is None:
            return PrunerSpec()
        data: Mapping[Any, Any] = {"type": value} if isinstance(value, str) else value  # type: ignore[assignment]
        data = self.mapping(data, "tune.pruner", "asha or {type: asha, min_steps: 1}")
        kind = self.kind(data.get("type", "asha"), "tune.pruner.type", PRUNERS)
        self.check_keys(data, _PRUNER_KEYS[kind], "tune.pruner")
        default = PrunerSpec()
        min_steps = self.integer(
            data.get("min_steps", default.min_steps), "tune.pruner.min_steps", minimum=1
        )
        factor = self.integer(
            data.get("reduction_factor", default.reduction_factor),
            "tune.pruner.reduction_factor",
            minimum=2,
        )
        max_steps = data.get("max_steps")
        if max_steps is not None:
            max_steps = self.integer(max_steps, "tune.pruner.max_steps", minimum=1)
            if max_steps <= min_steps:
                raise self.error(
                    "tune.pruner.max_steps",
                    f"must be greater than min_steps ({min_steps}), got {max_steps}",
                    max_steps,
                )
        return PrunerSpec(
            type=kind,
            min_steps=min_steps,
            max_steps=max_steps,
            reduction_factor=factor,
            warmup_steps=self.integer(
                data.get("warmup_steps", default.warmup_steps),
                "tune.pruner.warmup_steps",
                minimum=0,
            ),
            startup_trials=self.integer(
                data.get("startup_trials", default.startup_trials),
                "tune.pruner.startup_trials",
                minimum=0,
            ),
        )


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


def _show(value: object) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {short_repr(value)}"
