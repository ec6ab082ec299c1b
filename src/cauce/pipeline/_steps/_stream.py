"""``stream``: a pipeline that ends in a streaming job. ``cauce predict --stream`` as a step:
the files arriving in ``input`` are scored by ``model`` into ``output`` on Spark Structured
Streaming (the pipeline's Spark cluster, else ``local[2]``) until Ctrl-C or SIGTERM; the
checkpoint makes a rerun go on where the last one stopped. It is never up to date: a rerun
streams again."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cauce.pipeline._context import StepContext, StepKind
from cauce.pipeline._steps._uris import location
from cauce.spec import CLUSTER_PREFIXES

__all__ = ["KIND"]


def run(ctx: StepContext) -> dict[str, Any]:
    from cauce.serve import stream_predict

    cfg = ctx.config
    model = location(ctx, cfg["model"])
    paths = {k: str(location(ctx, cfg[k])) for k in ("input", "output", "checkpoint")}
    spark = ctx.cluster is not None and ctx.cluster.startswith(CLUSTER_PREFIXES)
    master = cfg.get("spark_master") or (ctx.cluster if spark else None)
    ctx.console.step_started(
        ctx.step.name, f"streaming {paths['input']} through {model} into {paths['output']}"
    )
    ended = stream_predict(
        model,
        paths["input"],
        paths["output"],
        paths["checkpoint"],
        fmt=str(cfg.get("format") or "parquet"),
        spark_master=str(master) if master else None,
        trigger_s=float(cfg.get("trigger") or 1.0),
        progress=ctx.console.line,
    )
    ctx.extra["ran"] = True  # a stream is never up to date
    ctx.console.step_finished(
        ctx.step.name, f"stopped after {ended.batches} micro-batches, {ended.rows:,} rows"
    )
    return {
        "outputs": {"output": paths["output"], "checkpoint": paths["checkpoint"]},
        "batches": ended.batches,
        "rows": ended.rows,
    }


def summary(label: str, result: Mapping[str, Any], serving: bool) -> list[str]:
    return [
        f"{label}{result['rows']:,} rows in {result['batches']} micro-batches into "
        f"{result['outputs']['output']} (checkpoint {result['outputs']['checkpoint']})"
    ]


KIND = StepKind(
    "stream",
    run,
    keys=("model", "input", "output", "checkpoint", "format", "trigger", "spark_master"),
    required=("model", "input", "output", "checkpoint"),
    roots=("outputs", "rows", "batches"),
    summary=summary,
    on_cluster=True,
    own_cache=True,
)
