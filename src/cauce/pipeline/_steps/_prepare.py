"""``prepare``: a dataset from a preparation function (``cauce.data.prepare``), which keeps
its own cache of code and input files."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from cauce.errors import SpecError
from cauce.pipeline._context import StepContext, StepKind
from cauce.pipeline._steps._uris import location
from cauce.spec import CLUSTER_PREFIXES

__all__ = ["KIND"]


def run(ctx: StepContext) -> dict[str, Any]:
    from cauce.data import prepare

    function = str(ctx.config["function"])
    module, sep, name = function.rpartition(":")
    if not sep:
        raise SpecError(
            f"steps.{ctx.step.name}.function",
            f"must be MODULE:FUNCTION or PATH.py:FUNCTION, got {function!r}",
            source=ctx.pipeline.source,
        )
    if module.endswith(".py"):
        function = f"{ctx.path(module)}:{name}"
    elif ctx.pipeline.folder not in sys.path:
        sys.path.insert(0, ctx.pipeline.folder)
    out = location(ctx, ctx.config["out"]) if ctx.config.get("out") else ctx.out_dir()
    engine = str(ctx.config.get("engine") or "")
    master = ctx.config.get("spark_master")
    if not engine:
        spark = ctx.cluster is not None and ctx.cluster.startswith(CLUSTER_PREFIXES)
        engine = "spark" if spark else "duckdb"
        master = master or (ctx.cluster if spark else None)
    rows: dict[str, int] = {}

    def progress(split: str, written: int) -> None:
        rows[split] = written
        ctx.console.progress(
            sum(rows.values()),
            None,
            "rows written",
            ", ".join(f"{k} {v:,}" for k, v in rows.items()),
        )

    ctx.console.step_started(ctx.step.name, f"preparing {function} into {out} ({engine})")
    manifest = prepare(
        function,
        out,
        engine=engine,
        spark_master=str(master) if master else None,
        force=ctx.force,
        progress=progress,
    )
    split_rows = dict(manifest.rows)
    ctx.extra["ran"] = bool(rows)
    how = "written" if rows else "up to date, nothing ran"
    ctx.console.step_finished(
        ctx.step.name,
        f"{how}: "
        + ", ".join(f"{k} {v:,} rows" for k, v in split_rows.items())
        + f"; content {manifest.content_hash[:16]}",
    )
    return {
        "outputs": {
            "dataset": str(out),
            "content_hash": manifest.content_hash,
            "rows": split_rows,
        },
    }


def summary(label: str, result: Mapping[str, Any], serving: bool) -> list[str]:
    o = result["outputs"]
    rows = ", ".join(f"{k} {v:,}" for k, v in o["rows"].items())
    return [f"{label}{o['dataset']}: {rows} rows (content {o['content_hash'][:16]})"]


def lineage(result: Mapping[str, Any]) -> dict[str, Any]:
    outputs = result["outputs"]
    return {"dataset": outputs["dataset"], "content_hash": outputs["content_hash"]}


KIND = StepKind(
    "prepare",
    run,
    keys=("function", "out", "engine", "spark_master"),
    required=("function",),
    roots=("outputs",),
    summary=summary,
    on_cluster=True,
    own_cache=True,
    lineage=lineage,
)
