"""Run a pipeline's steps in order, skipping those whose inputs have not changed.

A step's key is a hash of its kind, its settings with the references resolved, the hashes of
the results of the steps it reads, and its code (the job file and the scripts beside it). A
step whose key matches the last successful run's, and whose outputs still exist, is skipped.
Preparation keeps its own cache (code and input files, see ``cauce.data.prepare``): it is
asked every time and says whether it wrote anything. The serve step runs again only to serve
(``--serve``) or when the model changed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cauce.errors import CauceError
from cauce.pipeline._console import PipelineConsole, format_seconds
from cauce.pipeline._refs import resolve
from cauce.pipeline._spec import PipelineSpec
from cauce.pipeline._state import StateStore, digest
from cauce.pipeline._steps import StepContext, code_hash, run_step

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


def _needs_all(spec: PipelineSpec, name: str) -> list[str]:
    """Every step ``name`` reads, directly or through others, in file order."""
    seen: set[str] = set()
    todo = list(spec.step(name).needs)
    while todo:
        step = todo.pop()
        if step not in seen:
            seen.add(step)
            todo.extend(spec.step(step).needs)
    return [s.name for s in spec.steps if s.name in seen]


def _lineage(
    spec: PipelineSpec, name: str, results: Mapping[str, Mapping[str, Any]], code: str
) -> dict[str, Any]:
    """Where a model made by step ``name`` came from: the pipeline, the job, the code, and
    every upstream dataset, study and job."""
    result = results[name]
    upstream: dict[str, Any] = {}
    for step in _needs_all(spec, name):
        kind, got = spec.step(step).kind, results[step]
        if kind == "prepare":
            outputs = got["outputs"]
            upstream[step] = {
                "dataset": outputs["dataset"],
                "content_hash": outputs["content_hash"],
            }
        elif kind == "tune":
            best = {k: v for k, v in got["best"].items() if k != "params"}  # = the job's params
            upstream[step] = {"study": got["study"], **best}
        elif kind == "run":
            upstream[step] = {"job_id": got["job_id"]}
    return {
        "name": spec.name,
        "file": str(Path(spec.source).resolve()) if spec.source else "",
        "step": name,
        "job_id": result["job_id"],
        "params": result.get("params", {}),
        "code_sha256": code,
        "upstream": upstream,
    }


def _record_lineage(outputs: Mapping[str, str], lineage: Mapping[str, Any]) -> list[str]:
    """Add ``lineage.pipeline`` to every model folder among the outputs (atomically)."""
    from cauce.serve._spec import SPEC_FILE

    models = []
    for path in outputs.values():
        spec_file = Path(path) / SPEC_FILE
        if not spec_file.is_file():
            continue
        raw = json.loads(spec_file.read_text(encoding="utf-8"))
        raw.setdefault("lineage", {})["pipeline"] = dict(lineage)
        tmp = spec_file.with_name(f".{SPEC_FILE}.{os.getpid()}.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.write(json.dumps(raw, indent=2, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, spec_file)
        models.append(str(path))
    return models


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
    """Run the steps in order; returns what each did. A failing step raises (its error names
    the step); the steps before it keep their results, so a re-run starts at the failed one.

    ``force`` names a step to run again with everything after it, cached or not; ``serve``
    keeps the serve step's server up until interrupted.
    """
    from cauce.history import cauce_home

    root = Path(home) if home is not None else cauce_home()
    names = [s.name for s in spec.steps]
    if force is not None and force not in names:
        raise CauceError(f"--force {force}: no such step (steps: {', '.join(names)})")
    if serve and not any(s.kind == "serve" for s in spec.steps):
        raise CauceError(f"--serve: pipeline {spec.name} has no serve step")
    console = console or PipelineConsole()
    folder = pipeline_home(spec.name, root)
    state = StateStore(folder)
    out = PipelineResult(spec.name, str(folder))
    began = time.monotonic()
    forcing = False
    results: dict[str, Mapping[str, Any]] = {}
    hashes: dict[str, str] = {}
    with state.locked(spec.name):
        for step in spec.steps:
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
            )
            code = code_hash(ctx)
            ctx.key = digest(
                {
                    "version": _KEY_VERSION,
                    "kind": step.kind,
                    "config": config,
                    "upstream": {n: hashes[n] for n in step.needs},
                    "code": code,
                    "cluster": cluster if step.kind in ("prepare", "tune", "run") else None,
                }
            )
            previous = state.get(step.name)
            always = step.kind == "prepare" or (step.kind == "serve" and serve)
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
                continue
            started = time.monotonic()
            try:
                result = run_step(ctx)
            except (CauceError, KeyboardInterrupt):
                console.line(
                    f"[{step.name}] failed or stopped; the steps before it keep their results, "
                    "so the next run starts here"
                )
                raise
            if step.kind == "run":
                lineage = _lineage(spec, step.name, {**results, step.name: result}, code)
                models = _record_lineage(result.get("outputs") or {}, lineage)
                if models:
                    result = {**result, "lineage": lineage}
            took = time.monotonic() - started
            record = state.put(step.name, ctx.key, result, took)
            results[step.name] = result
            hashes[step.name] = record.hash
            ran = step.kind != "prepare" or bool(ctx.extra.get("ran"))
            out.steps.append(
                StepOutcome(step.name, step.kind, "ran" if ran else "skipped", took, result)
            )
    out.seconds = time.monotonic() - began
    return out


def summary(result: PipelineResult, *, serving: bool = False) -> list[str]:
    """The lines people read at the end: data, tuning, model, test figures, how to query."""
    ran = sum(1 for s in result.steps if s.status == "ran")
    lines = [
        f"pipeline {result.name}: {len(result.steps)} steps, {ran} ran, "
        f"{len(result.steps) - ran} up to date, in {format_seconds(result.seconds)}"
    ]
    for step in result.steps:
        r = step.result
        label = f"  {step.name:<10}"
        if step.kind == "prepare":
            o = r["outputs"]
            rows = ", ".join(f"{k} {v:,}" for k, v in o["rows"].items())
            lines.append(f"{label}{o['dataset']}: {rows} rows (content {o['content_hash'][:16]})")
        elif step.kind == "tune":
            best = r["best"]
            params = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in best["params"].items()
            )
            counts = ", ".join(f"{n} {s}" for s, n in sorted(r.get("trials", {}).items()))
            lines.append(
                f"{label}study {r['study']} ({counts}): best {best['metric']} "
                f"{best['value']:.4f}, trial {best['trial']}: {params}"
            )
        elif step.kind == "run":
            outputs = ", ".join(f"{k} {v}" for k, v in r.get("outputs", {}).items())
            lines.append(f"{label}job {r['job_id']}: {outputs or r['run_dir']}")
        elif step.kind == "evaluate":
            m = r["metrics"]
            versus = "".join(
                f" vs {n} {c['auc']:.4f} ({c['difference']:+.4f})"
                for n, c in r.get("compare", {}).items()
            )
            lines.append(
                f"{label}AUC {m['auc']:.4f}{versus}; log loss {m['logloss']:.4f} on "
                f"{m['rows']:,} rows"
            )
        elif step.kind == "serve":
            if "prediction" in r:
                lines.append(f"{label}one prediction over HTTP: {json.dumps(r['prediction'])}")
            if not serving:
                lines.append(f"  query it: {r['serve']} &")
                lines.append(f"            {r['curl']}")
        elif step.kind == "package":
            lines.append(f"{label}{r['outputs']['package']}")
    return lines
