"""What a kind of step is (:class:`StepKind`) and what it is given (:class:`StepContext`).

A kind takes the step's resolved settings and returns its result: plain JSON that later steps
read through ``${steps.NAME...}`` and that the state file keeps. The kinds are registered in
``cauce.pipeline._steps.KINDS``; the file's checks, the runner and the summary ask them.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cauce.errors import CauceError, SpecError
from cauce.pipeline._console import PipelineConsole
from cauce.pipeline._state import digest, hash_files
from cauce.spec import JobSpec, load_job, with_spark_conf
from cauce.tracking import PipelineTracking

if TYPE_CHECKING:
    from cauce.cluster import WarmStarts
    from cauce.pipeline._spec import PipelineSpec, StepSpec
    from cauce.pipeline._warmup import Warmer, Warmup

__all__ = ["StepContext", "StepKind", "code_hash", "job_of"]


@dataclass(frozen=True)
class StepKind:
    """One kind of step: the settings it takes (besides ``kind``) and needs, what a later step
    may read of its result (``${steps.NAME.<root>...}``), what it does (``run``), its lines in
    the closing summary (``summary(label, result, serving)``), and what the lineage of a model
    made downstream records of it."""

    name: str
    run: Callable[[StepContext], dict[str, Any]]
    keys: tuple[str, ...]
    required: tuple[str, ...]
    roots: tuple[str, ...]
    summary: Callable[[str, Mapping[str, Any], bool], list[str]]
    lineage: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    runs_job: bool = False  # its key covers its job file and the code beside it
    on_cluster: bool = False  # its key covers --cluster
    own_cache: bool = False  # asked every run, it sets ctx.extra["ran"]
    serves: bool = False  # --serve runs it again and keeps it up
    # what it will need, from its settings as written: got ready while the step before runs
    warmup: Callable[[Mapping[str, Any]], Warmup | None] | None = None


@dataclass
class StepContext:
    pipeline: PipelineSpec
    step: StepSpec
    config: Mapping[str, Any]  # references resolved
    key: str
    home: Path  # $CAUCE_HOME/pipelines/NAME
    cauce_home: Path
    history: str | None
    cluster: str | None
    console: PipelineConsole
    results: Mapping[str, Mapping[str, Any]]  # earlier steps'
    force: bool = False
    serve_forever: bool = False
    show_output: bool = False
    code: str = ""  # the hash of the code a job step runs (see code_hash)
    extra: dict[str, Any] = field(default_factory=dict)
    tracking: PipelineTracking | None = None  # MLflow: the pipeline's run, if tracked
    warmer: Warmer | None = None  # what was got ready for this step (see _warmup)
    #: The warm starts (preload:) that the job steps share: the tasks of a training step fork
    #: from the process that the study before it started, imports done.
    warm_starts: WarmStarts | None = None

    def path(self, value: str) -> Path:
        """A path from the pipeline file's folder (absolute ones as they are)."""
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else Path(self.pipeline.folder) / p

    def fail(self, message: str) -> CauceError:
        return CauceError(f"step {self.step.name}: {message}")

    def out_dir(self) -> Path:
        """``out:`` if set, else the step's folder in the pipeline's home."""
        out = self.config.get("out")
        return self.path(str(out)) if out else self.home / self.step.name


def job_of(ctx: StepContext) -> JobSpec:
    """The step's job file, with its ``env`` and ``args`` applied."""
    spec = with_spark_conf(
        load_job(ctx.path(str(ctx.config["job"]))), [], os.environ.get("CAUCE_SPARK_CONF")
    )
    env = {k: str(v) for k, v in (ctx.config.get("env") or {}).items()}
    if env:
        merged = dict(spec.env)
        merged.update(env)
        spec = replace(spec, env=tuple(merged.items()))
    args = [str(a) for a in ctx.config.get("args") or []]
    if args:
        if not isinstance(spec.command, str) or any(r.command for r in spec.roles):
            raise SpecError(
                f"steps.{ctx.step.name}.args",
                "needs a job with one top-level command string to append to; put the "
                "arguments in the job file's command instead",
                source=ctx.pipeline.source,
            )
        spec = replace(spec, command=f"{spec.command} {shlex.join(args)}")
    return spec


def code_hash(ctx: StepContext) -> str:
    """The code a job step runs: its job file and the files its ``code:`` globs name (by
    default every ``*.py`` under the job's working directory)."""
    job_file = ctx.path(str(ctx.config["job"]))
    if not job_file.is_file():
        raise SpecError(
            f"steps.{ctx.step.name}.job",
            f"no job file at {job_file}; paths start at the pipeline file's folder",
            source=ctx.pipeline.source,
        )
    spec = load_job(job_file)
    workdir = Path(spec.workdir).resolve()
    files: set[Path] = set()
    for pattern in [str(p) for p in ctx.config.get("code") or ["**/*.py"]]:
        found = [
            p.resolve()
            for p in workdir.glob(pattern)
            if p.is_file()
            and not any(
                part.startswith((".", "__pycache__")) for part in p.relative_to(workdir).parts
            )
        ]
        if not found and ctx.config.get("code"):
            raise SpecError(
                f"steps.{ctx.step.name}.code",
                f"{pattern!r} matches no file in {workdir}",
                source=ctx.pipeline.source,
            )
        files.update(p for p in found if p.is_relative_to(workdir))
    # Names relative to the working folder: a checkout moved elsewhere keeps its cache.
    return digest([job_file.read_text(encoding="utf-8"), hash_files(sorted(files), workdir)])
