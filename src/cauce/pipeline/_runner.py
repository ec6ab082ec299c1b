"""Run a pipeline's steps in order, skipping those whose inputs have not changed.

A step's key is a hash of its kind, its settings with the references resolved, the hashes of
the results of the steps it reads, and its code (the job file and the scripts beside it). A
step whose key matches the last successful run's, and whose outputs still exist, is skipped.
Preparation keeps its own cache (code and input files, see ``cauce.data.prepare``): it is
asked every time and says whether it wrote anything. The serve step runs again only to serve
(``--serve``) or when the model changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cauce._util.files import atomic_write_text
from cauce.cluster import WarmStarts
from cauce.errors import CauceError, SpecError
from cauce.pipeline._console import PipelineConsole, format_seconds
from cauce.pipeline._context import StepContext, code_hash, job_of
from cauce.pipeline._refs import resolve
from cauce.pipeline._spec import PipelineSpec
from cauce.pipeline._state import StateStore, digest
from cauce.pipeline._steps import KINDS
from cauce.pipeline._warmup import Warmer, warmup_mode
from cauce.tracking import PipelineTracking, open_pipeline_tracking

__all__ = ["PipelineResult", "StepOutcome", "pipeline_home", "run_pipeline"]

_KEY_VERSION = 1


@dataclass(frozen=True)
class StepOutcome:
    name: str
    kind: str
    status: str  # ran | skipped
    seconds: float
    result: Mapping[str, Any]


@dataclass
class PipelineResult:
    name: str
    home: str
    steps: list[StepOutcome] = field(default_factory=list)
    seconds: float = 0.0


def pipeline_home(name: str, cauce_home: Path) -> Path:
    return cauce_home / "pipelines" / name


def _outputs_exist(result: Mapping[str, Any]) -> bool:
    outputs = result.get("outputs") or {}
    for value in outputs.values() if isinstance(outputs, Mapping) else []:
        if isinstance(value, str) and value.startswith("/") and not os.path.exists(value):
            return False
    return True


def run_pipeline(
    spec: PipelineSpec,
    *,
    cluster: str | None = None,
    history: str | None = None,
    home: str | os.PathLike[str] | None = None,
    force: str | None = None,
    serve: bool = False,
    console: PipelineConsole | None = None,
    show_output: bool = False,
) -> PipelineResult:
    """Run the steps in order; returns what each did. A failing step raises (its error has a
    note naming the step, shown in its traceback); the steps before it keep their results, so
    a re-run starts at the failed one.

    ``force`` names a step to run again with everything after it, cached or not; ``serve``
    keeps the serve step's server up until interrupted.
    """
    from cauce.history import cauce_home

    root = Path(home) if home is not None else cauce_home()
    names = [s.name for s in spec.steps]
    if force is not None and force not in names:
        raise SpecError(
            "--force", f"names no step of {spec.name}: {force!r} (steps: {', '.join(names)})"
        )
    if serve and not any(KINDS[s.kind].serves for s in spec.steps):
        raise SpecError("--serve", f"needs a serve step; pipeline {spec.name} has none")
    warmer = Warmer(warmup_mode(os.environ))
    console = console or PipelineConsole()
    folder = pipeline_home(spec.name, root)
    tracking = open_pipeline_tracking(
        spec.tracking, os.environ, folder, spec.name, warn=console.line
    )
    state = StateStore(folder)
    out = PipelineResult(spec.name, str(folder))
    began = time.monotonic()
    forcing = False
    results: dict[str, Mapping[str, Any]] = {}
    hashes: dict[str, str] = {}
    with (
        state.locked(spec.name),
        contextlib.closing(console),  # the bar goes, also on errors
        _last_run(spec, folder, out) as failing,
        _tracked(tracking),
        contextlib.closing(warmer),  # nothing started early outlives the pipeline
        contextlib.closing(WarmStarts()) as warm_starts,  # the job steps' preload: processes
    ):
        for index, step in enumerate(spec.steps):
            failing[0] = step.name
            kind = KINDS[step.kind]
            forcing = forcing or step.name == force
            where = f"steps.{step.name}"
            config = resolve(dict(step.config), results, where)
            ctx = StepContext(
                pipeline=spec,
                step=step,
                config=config,
                key="",
                home=folder,
                cauce_home=root,
                history=history,
                cluster=cluster,
                console=console,
                results=results,
                force=forcing,
                serve_forever=serve,
                show_output=show_output,
                tracking=tracking,
                warmer=warmer,
                warm_starts=warm_starts,
            )
            code = ctx.code = code_hash(ctx) if kind.runs_job else ""
            ctx.key = digest(
                {
                    "version": _KEY_VERSION,
                    "kind": step.kind,
                    "config": config,
                    "upstream": {n: hashes[n] for n in step.needs},
                    "code": code,
                    "cluster": cluster if kind.on_cluster else None,
                }
            )
            previous = state.get(step.name)
            always = kind.own_cache or (kind.serves and serve)
            if (
                not always
                and not forcing
                and previous is not None
                and previous.key == ctx.key
                and _outputs_exist(previous.result)
            ):
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(previous.finished_at))
                console.step_skipped(step.name, f"up to date (inputs unchanged since {when})")
                results[step.name] = previous.result
                hashes[step.name] = previous.hash
                out.steps.append(StepOutcome(step.name, step.kind, "skipped", 0.0, previous.result))
                warmer.discard()  # whatever was got ready for it
                continue
            _arm(warmer, spec, index, folder, cluster)
            if warmer.mode != "off":
                _prestart(warm_starts, ctx, index, state)
            started = time.monotonic()
            try:
                result = kind.run(ctx)
            except (CauceError, KeyboardInterrupt) as exc:
                console.line(
                    f"[{step.name}] failed or stopped; the steps before it keep their results, "
                    "so the next run starts here"
                )
                exc.add_note(f"in step {step.name} of pipeline {spec.name}")  # in its traceback
                raise
            took = time.monotonic() - started
            record = state.put(step.name, ctx.key, result, took)
            results[step.name] = result
            hashes[step.name] = record.hash
            ran = not kind.own_cache or bool(ctx.extra.get("ran"))
            out.steps.append(
                StepOutcome(step.name, step.kind, "ran" if ran else "skipped", took, result)
            )
    out.seconds = time.monotonic() - began
    return out


def _arm(warmer: Warmer, spec: PipelineSpec, index: int, folder: Path, cluster: str | None) -> None:
    """While step ``index`` runs, get the next one ready if it says what it needs; not its
    Spark session on a Spark master: that would hold the cluster's executors meanwhile."""
    if index + 1 >= len(spec.steps):
        return
    following = spec.steps[index + 1]
    want = KINDS[following.kind].warmup
    plan = want(following.config) if want is not None else None
    if plan is None:
        return
    if plan.spark_app is not None:
        from cauce.spec import CLUSTER_PREFIXES

        if (cluster is not None and cluster.startswith(CLUSTER_PREFIXES)) or _active_spark():
            plan = replace(plan, spark_app=None)
        else:
            plan = replace(plan, spark_log=folder / following.name / "spark.log")
    warmer.arm(plan, spec.steps[index].name)


def _prestart(warm_starts: WarmStarts, ctx: StepContext, index: int, state: StateStore) -> None:
    """While step ``index`` runs, start the warm-start processes (``preload:``) of the job step
    after it, on the local cluster: their imports take one core for a few seconds, which that
    step's first tasks would otherwise wait for. Not for a step that has succeeded before
    (unless forced): it may well be up to date, and the pipeline would then wait for imports
    nobody uses. Its settings are read as written (references to this step's results
    unresolved); a job file that cannot be read so is left to the step."""
    steps = ctx.pipeline.steps
    if index + 1 >= len(steps) or not KINDS[steps[index + 1].kind].runs_job:
        return
    if not ctx.force and state.get(steps[index + 1].name) is not None:
        return
    from cauce.cluster import cluster_address
    from cauce.gang import warm_launches

    following = replace(ctx, step=steps[index + 1], config=steps[index + 1].config)
    try:
        spec = job_of(following)
        launches = warm_launches(spec, os.environ)
        local = cluster_address(ctx.cluster, spec) == "local"
    except (CauceError, OSError, ValueError):
        return
    if launches and local:
        threading.Thread(
            target=warm_starts.prestart, args=(launches,), name="cauce-prestart", daemon=True
        ).start()


def _active_spark() -> bool:
    """Whether this process runs a Spark session already (the steps use it, as it is)."""
    if "pyspark" not in sys.modules:
        return False
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession() is not None


@contextlib.contextmanager
def _tracked(tracking: PipelineTracking | None) -> Iterator[None]:
    """End the pipeline's MLflow run (if it has one) as the steps end: finished or failed."""
    ok = False
    try:
        yield
        ok = True
    finally:
        if tracking is not None:
            tracking.close(ok)


@contextlib.contextmanager
def _last_run(spec: PipelineSpec, folder: Path, out: PipelineResult) -> Iterator[list[str]]:
    """``last_run.json`` in the pipeline's folder: its steps in order, with their kind, what
    they read, and how they went in the last run (ran, skipped as up to date, failed, or not
    reached), for the portal. The caller keeps the step being run in the list it is given."""
    failing = [""]
    try:
        yield failing
        failing[0] = ""
    finally:
        done = {s.name: s for s in out.steps}
        steps = []
        for step in spec.steps:
            outcome = done.get(step.name)
            status = outcome.status if outcome else "failed" if step.name == failing[0] else ""
            steps.append(
                {
                    "name": step.name,
                    "kind": step.kind,
                    "needs": list(step.needs),
                    "status": status or "not run",
                    "seconds": outcome.seconds if outcome else None,
                }
            )
        record = {"file": spec.source, "finished_at": time.time(), "steps": steps}
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / "last_run.json", json.dumps(record, indent=2) + "\n")


def summary(result: PipelineResult, *, serving: bool = False) -> list[str]:
    """The lines people read at the end: data, tuning, model, test figures, how to query."""
    ran = sum(1 for s in result.steps if s.status == "ran")
    lines = [
        f"pipeline {result.name}: {len(result.steps)} steps, {ran} ran, "
        f"{len(result.steps) - ran} up to date, in {format_seconds(result.seconds)}"
    ]
    for step in result.steps:
        lines += KINDS[step.kind].summary(f"  {step.name:<10}", step.result, serving)
    return lines
