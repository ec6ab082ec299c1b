"""``cauce mlflow sync JOB``: send to MLflow what a job could not send while its tracking
server was down (the spool in its run folder; see docs/tracking.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from cauce.cli._options import env_option

__all__ = ["register"]


def register(sub: Any) -> None:
    mlflow = sub.add_parser("mlflow", help="MLflow tracking: replay what was not sent")
    commands = mlflow.add_subparsers(dest="mlflow_command", metavar="COMMAND", required=True)
    sync = commands.add_parser(
        "sync",
        help="replay a job's unsent MLflow data (its run folder's spool)",
        description=(
            "Send to MLflow what JOB (a job id, a unique prefix of one, or the path of a spool "
            "file, e.g. a study's or a pipeline's) could not send while the tracking server was "
            "down; the spool is renamed *.synced once sent."
        ),
    )
    sync.add_argument("job", metavar="JOB", help="job id (or prefix), or a spool file")
    sync.add_argument(
        "--uri", default=None, help="send to this tracking server instead of the recorded one"
    )
    env_option(
        sync,
        "--history",
        env="CAUCE_HISTORY",
        help="SQLAlchemy URL of the history store (default: SQLite in $CAUCE_HOME)",
    )
    sync.set_defaults(func=cmd_sync)


def _spool(job: str, history: str | None) -> Path:
    from cauce.history import open_store
    from cauce.tracking import SPOOL_FILE

    if os.sep in job or job.endswith(".jsonl"):
        return Path(job)
    store = open_store(history)
    try:
        row = store.get_job(job)
    finally:
        store.close()
    return Path(row.run_dir) / SPOOL_FILE


def cmd_sync(args: argparse.Namespace) -> int:
    from cauce.tracking import replay

    done = replay(_spool(args.job, args.history), uri=args.uri)
    runs = ", ".join(done.runs) or "none"
    cut = f"; {done.skipped} line(s) cut by a crash left out" if done.skipped else ""
    print(
        f"cauce mlflow sync: {done.operations} operations sent (runs {runs}){cut}", file=sys.stderr
    )
    return 0
