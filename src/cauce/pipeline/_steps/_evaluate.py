"""``evaluate``: a model folder scores a split of a prepared dataset from raw records, as the
server would; binary classification for now (AUC, log loss, accuracy)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

from cauce._util.files import atomic_write_json
from cauce.pipeline._context import StepContext, StepKind
from cauce.pipeline._steps._uris import location
from cauce.pipeline._warmup import Warmup

__all__ = ["KIND", "roc_auc"]

_APP = "cauce-mllib-baseline"  # the baselines' Spark application


def roc_auc(labels: Any, scores: Any) -> float:
    """The chance that a positive outscores a negative, ties counting half."""
    import numpy as np

    y = np.asarray(labels).astype(bool)
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(scores), return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    return float((average_rank[inverse][y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def _record(batch: Any, row: int, features: list[str]) -> dict[str, Any]:
    """One row of a record batch as the raw record ``/predict`` takes (NaN and null: None)."""
    record: dict[str, Any] = {}
    for name in features:
        value = batch.column(batch.schema.get_field_index(name))[row].as_py()
        if isinstance(value, float) and math.isnan(value):
            value = None
        record[name] = value
    return record


def run(ctx: StepContext) -> dict[str, Any]:
    import fsspec
    import numpy as np
    import pyarrow.parquet as pq

    from cauce.data import read_manifest
    from cauce.serve import arrow_inputs, load_model

    model_dir = location(ctx, ctx.config["model"])
    split_name = str(ctx.config.get("split") or "test")
    label = str(ctx.config["label"])
    manifest = read_manifest(location(ctx, ctx.config["dataset"]))
    fs, root = fsspec.core.url_to_fs(manifest.root)
    split = manifest.split(split_name)
    model = load_model(model_dir)
    pre = model.spec.preprocessing
    if pre is None:
        raise ctx.fail(
            f"model {model_dir} has no preprocessing in cauce-model.json: evaluate scores raw "
            "records, as the server does; save the model with preprocessing="
        )
    output = model.outputs[0].name
    ctx.console.step_started(
        ctx.step.name,
        f"scoring split {split_name} ({split.rows:,} rows) with {model_dir}, as the server would",
    )
    scores, labels = [], []
    example: dict[str, Any] = {}
    done = 0
    for info in split.files:
        file = pq.ParquetFile(f"{root.rstrip('/')}/{info.path}", filesystem=fs)
        for batch in file.iter_batches(8192):
            index = batch.schema.get_field_index(label)
            if index < 0:
                raise ctx.fail(f"split {split_name} has no column {label!r} (label)")
            y = batch.column(index).to_numpy(zero_copy_only=False).astype(np.float64)
            if not np.isin(y, (0.0, 1.0)).all():
                raise ctx.fail(
                    f"label {label!r} must be 0 or 1: evaluate handles binary classification "
                    f"for now (found {sorted(set(np.unique(y).tolist()))[:5]})"
                )
            out = model.predict(arrow_inputs(pre, batch))[output].astype(np.float64).reshape(-1)
            if not example:
                example = {
                    "record": _record(batch, 0, pre.features),
                    "prediction": float(out[0]),
                    "output": output,
                    "label": float(y[0]),
                }
            scores.append(out)
            labels.append(y)
            done += batch.num_rows
            ctx.console.progress(done, split.rows, "rows scored")
    p, y = np.concatenate(scores), np.concatenate(labels)
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    metrics = {
        "auc": roc_auc(y, p),
        "logloss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log1p(-clipped))),
        "accuracy": float(np.mean((p >= 0.5) == (y == 1.0))),
        "positive_rate": float(y.mean()),
        "rows": len(y),
    }
    compare: dict[str, dict[str, float]] = {}
    for name, value in (ctx.config.get("compare") or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ctx.fail(f"compare.{name} must be a number (an AUC), got {value!r}")
        compare[name] = {"auc": float(value), "difference": metrics["auc"] - float(value)}
    for found in _baselines(ctx, manifest, pre, label, split_name):
        if len(found.labels) != len(y) or not np.array_equal(np.sort(found.labels), np.sort(y)):
            raise ctx.fail(f"{found.name} scored other rows than split {split_name}")
        auc = roc_auc(found.labels, found.scores)
        compare[found.name] = {
            "auc": auc,
            "difference": metrics["auc"] - auc,
            "train_rows": found.train_rows,
            "seconds": found.seconds,
        }
    out_dir = ctx.home / ctx.step.name
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "model": str(model_dir),
        "dataset": {"path": manifest.root, "content_hash": manifest.content_hash},
        "split": split_name,
        "metrics": metrics,
        "compare": compare,
        "example": example,
    }
    path = out_dir / "evaluation.json"
    atomic_write_json(path, report)
    versus = "".join(f", {n} {c['auc']:.4f} ({c['difference']:+.4f})" for n, c in compare.items())
    ctx.console.step_finished(
        ctx.step.name,
        f"{split_name} AUC {metrics['auc']:.4f}{versus}; log loss {metrics['logloss']:.4f}",
    )
    return {
        "metrics": metrics,
        "compare": compare,
        "example": example,
        "outputs": {"evaluation": str(path)},
        "model_name": model.name,
    }


def _baselines(ctx: StepContext, manifest: Any, pre: Any, label: str, split: str) -> list[Any]:
    """``baselines: [mllib_gbt, ...]``: MLlib trained on the same dataset, scored on ``split``;
    on the pipeline's Spark cluster (``--cluster spark://...``), else on ``local[2]``."""
    from cauce.errors import SpecError

    kinds = ctx.config.get("baselines") or []
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise SpecError(
            f"steps.{ctx.step.name}.baselines", f"must be a list of names, got {kinds!r}"
        )
    if not kinds:
        return []
    from cauce.pipeline._steps._mllib import BASELINES, mllib_scores

    unknown = [k for k in kinds if k not in BASELINES]
    if unknown:
        raise SpecError(
            f"steps.{ctx.step.name}.baselines",
            f"has no baseline {unknown[0]!r}; known: {', '.join(BASELINES)}",
            source=ctx.pipeline.source,
        )
    try:
        from pyspark.sql import SparkSession
    except ModuleNotFoundError:
        raise ctx.fail("baselines train on Spark: pip install 'cauce[spark]'") from None

    from cauce.serve import scoring_session
    from cauce.spec import CLUSTER_PREFIXES

    with contextlib.ExitStack() as stack:
        warm = ctx.warmer.take_spark(_APP, stack) if ctx.warmer is not None else None
        if warm is not None:
            session, note = warm
            where = f"local[2], {note}"
        else:
            spark = ctx.cluster is not None and ctx.cluster.startswith(CLUSTER_PREFIXES)
            master = (
                None if SparkSession.getActiveSession() else ctx.cluster if spark else "local[2]"
            )
            where = master or "the active session"
        ctx.console.step_started(ctx.step.name, f"training {', '.join(kinds)} on Spark ({where})")
        if warm is None:
            session = stack.enter_context(scoring_session(master, _APP))
        return mllib_scores(session, manifest, pre, label, kinds, test_split=split)


def _warmup(config: Mapping[str, Any]) -> Warmup:
    """While the step before runs: torch (to load the model), and the baselines' Spark."""
    return Warmup(modules=("torch",), spark_app=_APP if config.get("baselines") else None)


def summary(label: str, result: Mapping[str, Any], serving: bool) -> list[str]:
    m = result["metrics"]
    versus = "".join(
        f" vs {n} {c['auc']:.4f} ({c['difference']:+.4f})"
        for n, c in result.get("compare", {}).items()
    )
    return [f"{label}AUC {m['auc']:.4f}{versus}; log loss {m['logloss']:.4f} on {m['rows']:,} rows"]


KIND = StepKind(
    "evaluate",
    run,
    keys=("model", "dataset", "split", "label", "compare", "baselines"),
    required=("model", "dataset", "label"),
    roots=("metrics", "example", "outputs"),
    summary=summary,
    warmup=_warmup,
)
