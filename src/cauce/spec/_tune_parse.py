"""The ``tune:`` section of a job file: the objective, how to search (sampler and pruner) and
the points to try first; its ``space:`` is checked by :mod:`cauce.spec._tune_space`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from cauce.spec._tune import (
    DEFAULT_MAX_FAILURES,
    DEFAULT_PRUNE_GRACE,
    DEFAULT_TRIALS,
    MAX_GRID,
    Choice,
    Objective,
    ParamSpec,
    PrunerSpec,
    SamplerSpec,
    TuneSpec,
    check_trials,
)
from cauce.spec._tune_space import SpaceParser, outside
from cauce.spec._values import MAX_PAUSE, MAX_SEED, short_repr

__all__ = ["TUNE_KEYS", "parse_tune"]

TUNE_KEYS = (
    "objective",
    "space",
    "trials",
    "parallel",
    "sampler",
    "pruner",
    "max_failures",
    "prune_grace",
    "start",
    "entrypoint",
)
_OBJECTIVE_KEYS = ("metric", "direction", "task")
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
_METRIC_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,120}$")
_ENTRYPOINT_RE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
)


def parse_tune(value: object, *, task_ids: Sequence[str] = (), source: str = "") -> TuneSpec:
    """Validate the ``tune:`` section. ``task_ids`` are the gang's tasks (``worker-0``, ...),
    for checking ``objective.task``."""
    parser = _TuneParser(source, collects=True)
    spec = parser.tune(value, tuple(task_ids))
    parser.raise_errors()
    return spec


class _TuneParser(SpaceParser):
    def tune(self, value: object, task_ids: tuple[str, ...]) -> TuneSpec:
        data = self.mapping(
            value, "tune", "{objective: {metric: val_loss, direction: min}, space: {...}}"
        )
        self.check_keys(data, TUNE_KEYS, "tune")
        if "objective" not in data:
            raise self.error(
                "tune.objective", "is missing: add objective: {metric: val_loss, direction: min}"
            )
        if "space" not in data:
            raise self.error(
                "tune.space",
                "is missing: add space: {lr: {type: loguniform, low: 0.0001, high: 0.1}}",
            )
        objective = self.collect(
            partial(self.objective, data["objective"], task_ids), Objective("?", "min")
        )
        space = self.space(data["space"])
        sampler = self.collect(partial(self.sampler, data.get("sampler")), SamplerSpec())
        pruner = self.collect(partial(self.pruner, data.get("pruner")), PrunerSpec())
        parallel = self.collect(
            partial(self.integer, data.get("parallel", 1), "tune.parallel", minimum=1), 1
        )
        max_failures = self.collect(
            partial(
                self.integer,
                data.get("max_failures", DEFAULT_MAX_FAILURES),
                "tune.max_failures",
                minimum=0,
            ),
            DEFAULT_MAX_FAILURES,
        )
        grace = self.collect(
            partial(
                self.duration,
                data.get("prune_grace", DEFAULT_PRUNE_GRACE),
                "tune.prune_grace",
                minimum=0,
                maximum=MAX_PAUSE,
            ),
            DEFAULT_PRUNE_GRACE,
        )
        no_start: tuple[Mapping[str, Choice], ...] = ()
        start = self.collect(partial(self.start, data.get("start"), space), no_start)
        entrypoint = self.collect(partial(self.entrypoint, data.get("entrypoint"), task_ids), None)
        if self.errors:  # the checks below are of the whole search; its parts come first
            return TuneSpec(objective=objective, space=space)
        spec = TuneSpec(
            objective=objective,
            space=space,
            parallel=parallel,
            sampler=sampler,
            pruner=pruner,
            max_failures=max_failures,
            prune_grace=grace,
            start=start,
            entrypoint=entrypoint,
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
                problem = outside(params[name], given)
                if problem:
                    raise self.error(where, problem, given)
            points.append({str(k): v for k, v in data.items()})
        return tuple(points)

    def entrypoint(self, value: object, task_ids: tuple[str, ...]) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _ENTRYPOINT_RE.match(value):
            raise self.error(
                "tune.entrypoint",
                f"must be module:function, like train:main, got {short_repr(value)}",
                value,
            )
        if len(task_ids) > 1:
            raise self.error(
                "tune.entrypoint",
                f"needs a job of one task, this one has {len(task_ids)} "
                f"({', '.join(task_ids)}): remove entrypoint, and trials run the command",
                value,
            )
        return value

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

    def typed(
        self,
        value: object,
        path: str,
        example: str,
        keys: Mapping[str, tuple[str, ...]],
        default: str,
    ) -> tuple[Mapping[Any, Any], str]:
        """A section given as its type's name, or as a mapping with ``type`` (``default``, the
        section's default type, when it is left out) and that type's keys."""
        data = self.mapping({"type": value} if isinstance(value, str) else value, path, example)
        kind = self.kind(data.get("type", default), f"{path}.type", tuple(keys))
        self.check_keys(data, keys[kind], path)
        return data, kind

    def sampler(self, value: object) -> SamplerSpec:
        if value is None:
            return SamplerSpec()
        data, kind = self.typed(
            value, "tune.sampler", "tpe or {type: tpe, seed: 1}", _SAMPLER_KEYS, SamplerSpec().type
        )
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
        example = "asha or {type: asha, min_steps: 1}"
        data, kind = self.typed(value, "tune.pruner", example, _PRUNER_KEYS, PrunerSpec().type)
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
