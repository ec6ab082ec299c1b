"""``run`` (also ``train``): one job file run to the end (``cauce.gang.JobDriver``). Its
outputs are files in the job's run folder; a model folder among them gets the pipeline's
lineage."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cauce._util.remote import is_uri
from cauce.errors import GangFailed
from cauce.pipeline._console import PipelineConsole
from cauce.pipeline._context import StepContext, StepKind, job_of
from cauce.pipeline._steps._uris import exists, read_json, write_json

__all__ = ["KIND"]


class _JobConsole:
    """The driver's lines under the step: its status lines; task output only when asked."""

    def __init__(self, console: PipelineConsole, show_output: bool) -> None:
        self.console = console
        self.show_output = show_output

    def status(self, text: str) -> None:
        self.console.line(f"  {text}")

    def output(self, task_id: str, line: str) -> None:
        if self.show_output:
            self.console.line(f"  [{task_id}] {line}")


def run(ctx: StepContext) -> dict[str, Any]:
    from cauce.cluster import cluster_address, open_cluster
    from cauce.gang import JobDriver, new_job_id
    from cauce.history import open_store
    from cauce.tracking import open_job_tracking

    spec = job_of(ctx)
    params = ctx.config.get("params") or {}
    if not isinstance(params, Mapping):
        raise ctx.fail(f"params must be a mapping, got {params!r}")
    progress = ctx.config.get("progress") or {}
    total = progress.get("total")
    metric = progress.get("metric")
    latest: dict[str, float] = {}
    seen_steps: set[int] = set()

    def on_metrics(rows: list[Any]) -> None:
        for row in rows:
            seen_steps.add(row.step)
            latest[row.name] = row.value
        note = f"{metric} {latest[metric]:.4f}" if metric and metric in latest else ""
        ctx.console.progress(
            len(seen_steps), total, "steps reported" if not total else "steps", note
        )

    address = cluster_address(ctx.cluster, spec)
    ctx.console.step_started(
        ctx.step.name,
        f"running {spec.source} on {address}"
        + (f" with {', '.join(f'{k}={v}' for k, v in params.items())}" if params else ""),
    )
    job_id = new_job_id(spec.name)
    tracking = None
    if ctx.tracking is not None:  # the job's run, under the pipeline's; closed at the end
        run_dir = ctx.cauce_home / "runs" / job_id
        tracking = open_job_tracking(
            spec, {}, run_dir, job_id, kind="job", warn=ctx.console.line, parent=ctx.tracking.link()
        )
    with (
        contextlib.closing(tracking or _NoRun()),  # first: closed (ended) whatever fails
        open_cluster(address, spec, warm=ctx.warm_starts) as backend,
        contextlib.closing(open_store(ctx.history)) as store,
    ):
        driver = JobDriver(
            spec,
            backend,
            store,
            ctx.cauce_home,
            console=_JobConsole(ctx.console, ctx.show_output),
            params=dict(params),
            on_metrics=on_metrics,
            job_id=job_id,
            tracking=tracking,
        )
        result = driver.run()
        tasks = store.get_tasks(result.job_id)
        first = tasks[0].task_id if tasks else ""
        reported = {r.name: r.value for r in store.get_metrics(result.job_id) if r.task_id == first}
        if not result.ok:
            raise GangFailed(result.job_id, result.root_cause, status=result.status)
        done = _outputs(ctx, result, reported, params)
        recorded = _record_lineage(ctx, done)
        if ctx.tracking is not None and tracking is not None and "lineage" in recorded:
            from cauce import __version__

            model = _first_model(recorded["outputs"])
            ctx.tracking.log_model(tracking, model, recorded["lineage"], __version__)
    return recorded


class _NoRun:
    def close(self) -> None:
        pass


def _first_model(outputs: Mapping[str, str]) -> str:
    """The first model folder among the outputs, on this host (a URI's local copy)."""
    from cauce.serve import SPEC_FILE, local_model_dir

    found = next(p for p in outputs.values() if exists(f"{p.rstrip('/')}/{SPEC_FILE}"))
    return str(local_model_dir(found))


def _outputs(
    ctx: StepContext, result: Any, reported: dict[str, float], params: Mapping[str, Any]
) -> dict[str, Any]:
    """The job's outputs checked and read (JSON files parsed), as the step's result."""
    run_dir = Path(result.run_dir)
    outputs: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    for name, rel in (ctx.config.get("outputs") or {}).items():
        # A URI is on shared storage, where a rank on any host can write it.
        where = str(rel) if is_uri(rel) else run_dir / str(rel)
        if not exists(where):
            raise ctx.fail(
                f"job {result.job_id} succeeded but did not write outputs.{name}: nothing at "
                f"{where} (cauce logs {result.job_id})"
            )
        outputs[name] = str(where)
        if str(where).endswith(".json") and (is_uri(where) or Path(where).is_file()):
            try:
                parsed[name] = read_json(where)
            except ValueError as exc:
                raise ctx.fail(f"outputs.{name} ({where}) is not valid JSON: {exc}") from None
    ctx.console.step_finished(
        ctx.step.name,
        f"job {result.job_id} succeeded"
        + (f" after {result.restarts} restart(s)" if result.restarts else "")
        + "".join(f"; {k}: {v}" for k, v in outputs.items()),
    )
    return {
        "job_id": result.job_id,
        "run_dir": str(run_dir),
        "outputs": outputs,
        "json": parsed,
        "metrics": reported,
        "params": dict(params),
    }


def _needs_all(ctx: StepContext) -> list[str]:
    """Every step this one reads, directly or through others, in file order."""
    spec = ctx.pipeline
    seen: set[str] = set()
    todo = list(ctx.step.needs)
    while todo:
        step = todo.pop()
        if step not in seen:
            seen.add(step)
            todo.extend(spec.step(step).needs)
    return [s.name for s in spec.steps if s.name in seen]


def _record_lineage(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    """Add ``lineage.pipeline`` to every model folder among the outputs (atomically); the
    result gets ``lineage`` too if there was one."""
    from cauce.pipeline._steps import KINDS
    from cauce.serve import SPEC_FILE

    upstream: dict[str, Any] = {}
    for step in _needs_all(ctx):
        describe = KINDS[ctx.pipeline.step(step).kind].lineage
        if describe is not None:
            upstream[step] = describe(ctx.results[step])
    spec = ctx.pipeline
    lineage = {
        "name": spec.name,
        "file": str(Path(spec.source).resolve()) if spec.source else "",
        "step": ctx.step.name,
        "job_id": result["job_id"],
        "params": result.get("params", {}),
        "code_sha256": ctx.code,
        "upstream": upstream,
    }
    models = []
    outputs: Mapping[str, str] = result.get("outputs") or {}
    for path in outputs.values():
        spec_file = f"{path.rstrip('/')}/{SPEC_FILE}" if is_uri(path) else Path(path) / SPEC_FILE
        if not exists(spec_file):
            continue
        raw = read_json(spec_file)
        raw.setdefault("lineage", {})["pipeline"] = dict(lineage)
        write_json(spec_file, raw)
        models.append(path)
    return {**result, "lineage": lineage} if models else result


def summary(label: str, result: Mapping[str, Any], serving: bool) -> list[str]:
    outputs = ", ".join(f"{k} {v}" for k, v in result.get("outputs", {}).items())
    return [f"{label}job {result['job_id']}: {outputs or result['run_dir']}"]


def lineage(result: Mapping[str, Any]) -> dict[str, Any]:
    return {"job_id": result["job_id"]}


KIND = StepKind(
    "run",
    run,
    keys=("job", "params", "env", "args", "code", "outputs", "progress"),
    required=("job",),
    roots=("outputs", "json", "metrics", "job_id", "run_dir"),
    summary=summary,
    runs_job=True,
    on_cluster=True,
    lineage=lineage,
)
