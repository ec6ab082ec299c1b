"""``tune``: a study of a job file (``cauce.tune.tune``), drawn as a bar of finished trials. A
study interrupted by Ctrl-C continues on the next run (its name comes from the step's key)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cauce.pipeline._console import PipelineConsole
from cauce.pipeline._context import StepContext, StepKind, job_of

__all__ = ["KIND"]


class _TuneBar:
    """A :class:`~cauce.tune.TuneConsole` drawing the study as a bar of finished trials."""

    def __init__(self, console: PipelineConsole, target: int) -> None:
        self.console = console
        self.target = target

    def _draw(self, progress: Any) -> None:
        best = progress.best
        note = f"{progress.count('running')} running"
        if best is not None:
            note += f", best {progress.metric} {best.value:.4f} (trial {best.number})"
        self.console.progress(progress.done, self.target, "trials", note)

    def started(self, progress: Any, note: str) -> None:
        if note:
            self.console.line(f"  {note}")
        self._draw(progress)

    def changed(self, trial: Any, progress: Any) -> None:
        if trial.state == "failed":
            from cauce.tune import cause_lines

            first, *rest = cause_lines(trial.note, trial.job_id)
            self.console.line(f"  trial {trial.number} failed: {first}")
            for line in rest:
                self.console.line(f"  {line}")
        self._draw(progress)

    def tick(self, progress: Any) -> None:
        self._draw(progress)

    def finished(self, result: Any) -> None:
        pass


def run(ctx: StepContext) -> dict[str, Any]:
    from cauce.tune import quiet_optuna, resolve_study, tune

    quiet_optuna()
    spec = job_of(ctx)
    study = f"{ctx.pipeline.name}-{ctx.step.name}-{ctx.key[:10]}"
    trials = ctx.config.get("trials")
    parallel = ctx.config.get("parallel")
    _, target, width, _ = resolve_study(spec, trials, parallel, study)
    ctx.console.step_started(
        ctx.step.name, f"study {study}: {target} trials of {spec.source}, {width} at a time"
    )
    result = tune(
        spec,
        trials=target,
        parallel=width,
        study=study,
        cluster=ctx.cluster,
        history=ctx.history,
        home=ctx.cauce_home,
        console=_TuneBar(ctx.console, target),
        tracking_parent=ctx.tracking.link() if ctx.tracking is not None else None,
        warm_starts=ctx.warm_starts,
    )
    if result.status == "interrupted":  # Ctrl-C or SIGTERM: the study continues next run
        raise KeyboardInterrupt
    if not result.ok or result.best is None:
        raise ctx.fail(
            f"study {study} {result.status}: {result.reason or 'no trial completed'} "
            f"(cauce trials {study})"
        )
    best = result.best
    counts: dict[str, int] = {}
    for trial in result.trials:
        counts[trial.state] = counts.get(trial.state, 0) + 1
    ctx.console.step_finished(
        ctx.step.name,
        f"best {result.metric} {best.value:.4f}, trial {best.number} of "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
    )
    return {
        "study": study,
        "best": {
            "params": dict(best.params),
            "value": best.value,
            "trial": best.number,
            "job_id": best.job_id,
            "metric": result.metric,
        },
        "trials": counts,
        "outputs": {"study": study},
    }


def summary(label: str, result: Mapping[str, Any], serving: bool) -> list[str]:
    best = result["best"]
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items()
    )
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.get("trials", {}).items()))
    return [
        f"{label}study {result['study']} ({counts}): best {best['metric']} "
        f"{best['value']:.4f}, trial {best['trial']}: {params}"
    ]


def lineage(result: Mapping[str, Any]) -> dict[str, Any]:
    best = {k: v for k, v in result["best"].items() if k != "params"}  # = the job's params
    return {"study": result["study"], **best}


KIND = StepKind(
    "tune",
    run,
    keys=("job", "trials", "parallel", "env", "args", "code"),
    required=("job",),
    roots=("best", "study", "outputs"),
    summary=summary,
    runs_job=True,
    on_cluster=True,
    lineage=lineage,
)
