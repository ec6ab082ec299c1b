"""``cauce run JOB.yaml``: run a gang to the end, or print its plan with --dry-run."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cauce.cli._colour import paint
from cauce.cli._format import emit, pipeline_json, result_json
from cauce.cli._options import env_default, env_option
from cauce.errors import GangFailed, SpecError
from cauce.spec import with_spark_conf

__all__ = ["register"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="run a job file: a gang of processes on a cluster",
        description="Run a job file to the end. Exit 0 when every tracked task succeeded, "
        "1 when the job failed (the root cause is printed), 2 for a bad spec or a gang that "
        "can never fit, 130 when interrupted.",
    )
    parser.add_argument(
        "job", help="the job YAML file, or a pipeline file (one with steps:, see docs/pipeline.md)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print each task's placement, ports, GPUs and environment, then exit",
    )
    parser.add_argument(
        "--cluster",
        default=None,
        help="where to run: local (default), or a Spark master: spark://HOST:PORT, local[N], "
        "yarn, k8s://https://HOST:PORT; overrides the spec's cluster, which overrides "
        "$CAUCE_CLUSTER",
    )
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting for Spark clusters (repeatable), e.g. --conf "
        "spark.executor.memory=4g; overrides the spec's spark: section; also read from "
        "$CAUCE_SPARK_CONF (KEY=VALUE pairs separated by spaces, quoted as in a shell)",
    )
    env_option(
        parser,
        "--history",
        env="CAUCE_HISTORY",
        help="SQLAlchemy URL of the history store (default: SQLite in $CAUCE_HOME)",
    )
    env_option(
        parser,
        "--quiet",
        env="CAUCE_QUIET",
        flag=True,
        help="do not echo task output on the console (it still goes to the logs)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="run one configuration of a job with a tune: section, outside any study: a value "
        "for each parameter of its space (repeatable), e.g. --param lr=0.01 --param batch=64",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: print how the job ended, or the pipeline's summary, as one JSON document "
        "on stdout (docs/scripting.md)",
    )
    pipeline = parser.add_argument_group("pipelines")
    pipeline.add_argument(
        "--force",
        metavar="STEP",
        help="run STEP and every step after it again, even if up to date",
    )
    pipeline.add_argument(
        "--serve",
        action="store_true",
        help="keep the serve step's server up (on its port, 8080 by default) until Ctrl-C; "
        "without it the server answers one prediction and stops",
    )
    pipeline.add_argument(
        "--output",
        action="store_true",
        help="echo the tasks' output (a pipeline shows progress bars, the output goes to logs)",
    )
    parser.set_defaults(func=run)


def _is_pipeline_file(path: str) -> bool:
    """A readable YAML mapping with ``steps:``; anything else is left to the job parser."""
    from pathlib import Path

    from cauce._util.yamlfile import load_yaml_file
    from cauce.pipeline import is_pipeline

    try:
        return is_pipeline(load_yaml_file(Path(path), what="file"))
    except SpecError:
        return False


def run_pipeline_file(args: argparse.Namespace) -> int:
    from cauce.pipeline import PipelineConsole, load_pipeline, run_pipeline, summary

    if args.dry_run or args.conf or args.param:
        which = "--dry-run" if args.dry_run else "--conf" if args.conf else "--param"
        fix = {
            "--dry-run": "run a step's job file with --dry-run to see its plan",
            "--conf": "give a pipeline's Spark settings in its jobs' spark: sections",
            "--param": "give a step's parameters in its params: section",
        }[which]
        raise SpecError(which, f"is for job files; {fix}")
    spec = load_pipeline(args.job)
    console = PipelineConsole()
    try:
        result = run_pipeline(
            spec,
            cluster=args.cluster,
            history=args.history,
            force=args.force,
            serve=args.serve,
            console=console,
            show_output=args.output,
        )
    except GangFailed as exc:
        if exc.status != "killed":
            raise
        sys.stderr.write(f"error: {exc}\n")  # Ctrl-C, SIGTERM or cauce kill: as `cauce run`
        return 130
    if args.format == "json":
        return emit(pipeline_json(result))
    from cauce.ui import portal_hint

    lines = summary(result, serving=args.serve)
    lines.insert(1, "  " + portal_hint("pipelines", result.name))  # the curl stays last
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def run(args: argparse.Namespace) -> int:
    import cauce
    from cauce.gang import PrintConsole

    if _is_pipeline_file(args.job):
        return run_pipeline_file(args)
    if args.force or args.serve:
        raise SpecError(
            "--force" if args.force else "--serve",
            f"is for pipeline files (with steps:); {args.job} is a job file",
        )

    job = with_spark_conf(cauce.load_job(args.job), args.conf, env_default("CAUCE_SPARK_CONF"))
    if args.param:
        from cauce.tune import with_params

        job = with_params(job, args.param)
    if args.dry_run:
        if args.format == "json":
            raise SpecError(
                "--format json", "is how a job ended; --dry-run prints its plan as text"
            )
        sys.stdout.write(cauce.plan(job, cluster=args.cluster, history=args.history) + "\n")
        return 0
    console = PrintConsole(quiet=args.quiet or args.format == "json")
    result = cauce.run(job, cluster=args.cluster, history=args.history, console=console)
    if args.format == "json":
        emit(result_json(result))
    if result.ok:
        extra = f" after {result.restarts} restart(s)" if result.restarts else ""
        console.status(f"job {result.job_id} succeeded{extra}")
        return 0
    error = paint("error:", "red", sys.stderr)
    sys.stderr.write(f"{error} job {result.job_id} {result.status}: {result.root_cause}\n")
    if result.restarts:
        sys.stderr.write(f"{error} ({result.restarts} restart(s) were tried)\n")
    return 130 if result.status == "killed" else 1
