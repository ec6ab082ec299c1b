"""``cauce run JOB.yaml``: run a gang to the end, or print its plan with --dry-run."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cauce.cli.main import env_default

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
        help="where to run: local (default); overrides the spec's cluster, which overrides "
        "$CAUCE_CLUSTER",
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


def run(args: argparse.Namespace) -> int:
    import cauce
    from cauce.gang import PrintConsole

    if args.dry_run:
        sys.stdout.write(cauce.plan(args.job, cluster=args.cluster, history=args.history) + "\n")
        return 0
    console = PrintConsole(quiet=args.quiet)
    result = cauce.run(args.job, cluster=args.cluster, history=args.history, console=console)
    if result.ok:
        extra = f" after {result.restarts} restart(s)" if result.restarts else ""
        console.status(f"job {result.job_id} succeeded{extra}")
        return 0
    sys.stderr.write(f"error: job {result.job_id} {result.status}: {result.root_cause}\n")
    if result.restarts:
        sys.stderr.write(f"error: ({result.restarts} restart(s) were tried)\n")
    return 130 if result.status == "killed" else 1
