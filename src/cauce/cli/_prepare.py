"""``cauce prepare MODULE:FUNCTION --out PATH``: build a dataset with the data layer's engines."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

from cauce._util.text import one_line
from cauce.cli._options import env_option
from cauce.errors import CauceError, SpecError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``prepare`` subcommand; its handler is ``args.func = run``."""
    parser = subparsers.add_parser(
        "prepare",
        help="run a preparation function and write a Parquet dataset with a manifest",
        description=(
            "Run FUNCTION(ctx) from MODULE (importable from the current directory) or from "
            "PATH.py, on DuckDB or Spark, and write its splits as Parquet with a manifest. "
            "An unchanged re-run (same code, same inputs) is a cache hit and does nothing."
        ),
    )
    parser.add_argument("target", metavar="MODULE:FUNCTION", help="or PATH.py:FUNCTION")
    env_option(
        parser,
        "--out",
        env="CAUCE_PREPARE_OUT",
        required=True,
        help="dataset directory, local or a URI such as s3://bucket/path",
    )
    env_option(
        parser,
        "--engine",
        env="CAUCE_PREPARE_ENGINE",
        default="duckdb",
        choices=("duckdb", "spark"),
        help="where the function's expressions run (default duckdb)",
    )
    parser.add_argument(
        "--cluster",
        "--spark-master",
        dest="spark_master",
        action=_Cluster,
        metavar="URL",
        default=os.environ.get("CAUCE_SPARK_MASTER") or None,  # empty = unset, as env_option
        help="the Spark master, as for `cauce run`: local[4], spark://host:7077, yarn "
        "(--spark-master is its old name) [env CAUCE_SPARK_MASTER]",
    )
    env_option(
        parser,
        "--force",
        env="CAUCE_PREPARE_FORCE",
        flag=True,
        help="run even when the dataset is up to date",
    )
    parser.add_argument("--rows-per-file", type=int, default=1_000_000, metavar="N")
    parser.add_argument(
        "--row-group-rows",
        type=int,
        default=131_072,
        metavar="N",
        help="rows per row group (Spark: not for hdfs:// and s3a:// outputs, written by Spark)",
    )
    parser.set_defaults(func=run)


class _Cluster(argparse.Action):
    """``--cluster``; its old name ``--spark-master`` still works, with a note."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        if option_string == "--spark-master":
            print("cauce: --spark-master is deprecated: use --cluster", file=sys.stderr)
        setattr(namespace, self.dest, values)


def run(args: argparse.Namespace) -> int:
    from cauce.data import prepare

    if not args.out:  # "" would write into the current directory
        raise SpecError("--out", "must name the dataset's folder (a path or URI), got ''")
    for option, value in (
        ("--rows-per-file", args.rows_per_file),
        ("--row-group-rows", args.row_group_rows),
    ):
        if value < 1:
            raise SpecError(option, f"must be >= 1, got {value}")
    if os.getcwd() not in sys.path:  # MODULE:FUNCTION resolves like `python -m` would
        sys.path.insert(0, os.getcwd())
    written: dict[str, int] = {}

    def progress(split: str, rows: int) -> None:
        written[split] = rows
        print(f"  {split}: {rows:,} rows written", file=sys.stderr, flush=True)

    started = time.monotonic()
    try:
        manifest = prepare(
            args.target,
            args.out,
            engine=args.engine,
            spark_master=args.spark_master,
            force=args.force,
            progress=progress,
            rows_per_file=args.rows_per_file,
            row_group_rows=args.row_group_rows,
        )
    except CauceError:
        raise
    except Exception as exc:  # the function's own, or an engine's: its traceback, then a line
        traceback.print_exc()
        reason = one_line(exc)
        print(
            f"error: cauce prepare {args.target} failed: {type(exc).__name__}"
            f"{': ' + reason if reason else ''} (traceback above); {args.out} is as it was",
            file=sys.stderr,
        )
        return 1
    how = (
        f"written by {manifest.source.engine} in {time.monotonic() - started:.1f} s"
        if written
        else f"up to date, nothing ran (made by {manifest.source.engine} {manifest.created_at})"
    )
    print(f"{args.out}: {how}; content {manifest.content_hash[:16]}")
    for name, split in manifest.splits.items():
        print(
            f"  {name:<12} {split.rows:>12,} rows {split.row_groups:>6} row groups "
            f"{len(split.files):>5} files"
        )
    return 0
