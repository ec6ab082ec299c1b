"""Pipelines: prepare, tune, train, evaluate and serve from one file, re-running only what
changed.

    spec = cauce.pipeline.load_pipeline("examples/flights/pipeline.yaml")
    result = cauce.pipeline.run_pipeline(spec)

``cauce run pipeline.yaml`` does the same (a file with ``steps:`` is a pipeline). See
docs/pipeline.md.
"""

from cauce.pipeline._console import PipelineConsole
from cauce.pipeline._context import StepKind
from cauce.pipeline._runner import (
    PipelineResult,
    StepOutcome,
    pipeline_home,
    run_pipeline,
    summary,
)
from cauce.pipeline._spec import (
    PipelineSpec,
    StepSpec,
    is_pipeline,
    load_pipeline,
    parse_pipeline,
)
from cauce.pipeline._steps import KINDS

__all__ = [
    "KINDS",
    "PipelineConsole",
    "PipelineResult",
    "PipelineSpec",
    "StepKind",
    "StepOutcome",
    "StepSpec",
    "is_pipeline",
    "load_pipeline",
    "parse_pipeline",
    "pipeline_home",
    "run_pipeline",
    "summary",
]
