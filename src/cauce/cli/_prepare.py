"""``cauce prepare MODULE:FUNCTION --out PATH``: build a dataset with the data layer's engines."""

from __future__ import annotations

import argparse
import os
import sys
import time

ENV_OUT = "CAUCE_PREPARE_OUT"
ENV_ENGINE = "CAUCE_PREPARE_ENGINE"
ENV_SPARK_MASTER = "CAUCE_SPARK_MASTER"
ENV_FORCE = "CAUCE_PREPARE_FORCE"


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
    out = os.environ.get(ENV_OUT)
    parser.add_argument(
        "--out",
        default=out,
        required=out is None,
        help=f"dataset directory, local or a URI such as s3://bucket/path (env {ENV_OUT})",
    )
    parser.add_argument(
        "--engine",
        choices=("duckdb", "spark"),
        default=os.environ.get(ENV_ENGINE, "duckdb"),
        help=f"where the function's expressions run (default duckdb; env {ENV_ENGINE})",
    )
    parser.add_argument(
        "--cluster",
        "--spark-master",
        dest="spark_master",
        action=_Cluster,
        metavar="URL",
        default=os.environ.get(ENV_SPARK_MASTER),
        help=f"the Spark master, as for `cauce run`: local[4], spark://host:7077, yarn "
        f"(--spark-master is its old name; env {ENV_SPARK_MASTER})",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        default=os.environ.get(ENV_FORCE, "") not in ("", "0", "false"),
        help=f"run even when the dataset is up to date (env {ENV_FORCE}=1)",
    )
    parser.add_argument("--rows-per-file", type=int, default=1_000_000, metavar="N")
    parser.add_argument(
        "--row-group-rows", type=int, default=131_072, metavar="N", help="DuckDB engine only"
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

    if os.getcwd() not in sys.path:  # MODULE:FUNCTION resolves like `python -m` would
        sys.path.insert(0, os.getcwd())
    written: dict[str, int] = {}

    def progress(split: str, rows: int) -> None:
        written[split] = rows
        print(f"  {split}: {rows:,} rows written", file=sys.stderr, flush=True)

    started = time.monotonic()
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
