"""Where a model made by a run step came from: the pipeline, the job, its code, and every
upstream dataset, study and job, kept in the model's ``cauce-model.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cauce._util.files import atomic_write_json
from cauce.pipeline._context import StepContext

__all__ = ["record_lineage"]


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


def record_lineage(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    """Add ``lineage.pipeline`` to every model folder among the outputs (atomically); the
    result gets ``lineage`` too if there was one."""
    from cauce.pipeline._steps import KINDS
    from cauce.serve._spec import SPEC_FILE

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
        spec_file = Path(path) / SPEC_FILE
        if not spec_file.is_file():
            continue
        raw = json.loads(spec_file.read_text(encoding="utf-8"))
        raw.setdefault("lineage", {})["pipeline"] = dict(lineage)
        atomic_write_json(spec_file, raw)
        models.append(str(path))
    return {**result, "lineage": lineage} if models else result
