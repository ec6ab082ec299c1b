"""``package``: a model folder packaged for Docker and Kubernetes (``cauce.serve.package``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cauce.pipeline._context import StepContext, StepKind

__all__ = ["KIND"]


def run(ctx: StepContext) -> dict[str, Any]:
    from cauce.serve import package

    model_dir = ctx.path(str(ctx.config["model"]))
    out = ctx.out_dir()
    ctx.console.step_started(ctx.step.name, f"packaging {model_dir} into {out}")
    image = ctx.config.get("image")
    files = package(model_dir, out, image=str(image) if image else None)
    ctx.console.step_finished(ctx.step.name, f"{len(files)} files in {out}")
    return {"outputs": {"package": str(out), "files": [str(f) for f in files]}}


def summary(label: str, result: Mapping[str, Any], serving: bool) -> list[str]:
    return [f"{label}{result['outputs']['package']}"]


KIND = StepKind(
    "package",
    run,
    keys=("model", "out", "image"),
    required=("model",),
    roots=("outputs",),
    summary=summary,
)
