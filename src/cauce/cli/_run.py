"""``cauce run JOB.yaml``: run a gang to the end, or print its plan with --dry-run."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from typing import Any

from cauce.cli.main import env_default
from cauce.errors import SpecError
from cauce.spec import JobSpec
from cauce.spec._parse import spark_settings

__all__ = ["register"]


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="run a job file: a gang of processes on a cluster",
        description="Run a job file to the end. Exit 0 when every tracked task succeeded, "
        "1 when the job failed (the root cause is printed), 2 for a bad spec or a gang that "
        "can never fit, 130 when interrupted.",
    )
    parser.add_argument("job", help="the job YAML file")
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
    parser.add_argument(
        "--history",
        default=env_default("CAUCE_HISTORY"),
        help="SQLAlchemy URL of the history store (default: SQLite in $CAUCE_HOME) "
        "[env CAUCE_HISTORY]",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        default=env_default("CAUCE_QUIET", "") not in ("", "0"),
        help="do not echo task output on the console (it still goes to the logs) [env CAUCE_QUIET]",
    )
    parser.set_defaults(func=run)


def spark_conf(spec: JobSpec, options: list[str], environ: str | None) -> JobSpec:
    """The spec with ``$CAUCE_SPARK_CONF`` then ``--conf`` settings over its ``spark:``."""
    try:
        from_env = shlex.split(environ or "")
    except ValueError as exc:
        raise SpecError(
            "$CAUCE_SPARK_CONF", f"cannot be split into KEY=VALUE pairs: {exc}"
        ) from None
    pairs = [("$CAUCE_SPARK_CONF", pair) for pair in from_env]
    pairs += [("--conf", pair) for pair in options]
    merged = dict(spec.spark)
    for where, pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SpecError(
                where, f"must be KEY=VALUE, like spark.executor.memory=4g, got {pair!r}"
            )
        [(key, value)] = spark_settings({key.strip(): value}, where)
        merged[key] = value
    return replace(spec, spark=tuple(merged.items())) if pairs else spec


def run(args: argparse.Namespace) -> int:
    import cauce
    from cauce.gang import PrintConsole

    job = spark_conf(cauce.load_job(args.job), args.conf, env_default("CAUCE_SPARK_CONF"))
    if args.dry_run:
        sys.stdout.write(cauce.plan(job, cluster=args.cluster, history=args.history) + "\n")
        return 0
    console = PrintConsole(quiet=args.quiet)
    result = cauce.run(job, cluster=args.cluster, history=args.history, console=console)
    if result.ok:
        extra = f" after {result.restarts} restart(s)" if result.restarts else ""
        console.status(f"job {result.job_id} succeeded{extra}")
        return 0
    sys.stderr.write(f"error: job {result.job_id} {result.status}: {result.root_cause}\n")
    if result.restarts:
        sys.stderr.write(f"error: ({result.restarts} restart(s) were tried)\n")
    return 130 if result.status == "killed" else 1
