"""Helpers for the data tests: small Parquet datasets and preparation modules written to tmp."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: Row groups per file, deliberately uneven: 11 groups, 1,000 rows, one file with a single row.
UNEVEN = ((100, 7, 250), (1,), (300, 33, 9), (150, 50, 60, 40))


def table(start: int, rows: int) -> pa.Table:
    ids = np.arange(start, start + rows, dtype=np.int64)
    return pa.table(
        {
            "id": ids,
            "x": ids.astype(np.float64) * 0.5,
            "flag": ids % 3 == 0,
            "cat": pa.array([f"c{i % 7}" for i in ids.tolist()], pa.string()),
        }
    )


def write_files(root: Path, groups_per_file: Sequence[Sequence[int]] = UNEVEN) -> int:
    """Parquet files ``part-NN.parquet`` under ``root`` with these row groups; ``id`` = row."""
    root.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, groups in enumerate(groups_per_file):
        with pq.ParquetWriter(root / f"part-{i:02d}.parquet", table(0, 0).schema) as writer:
            for rows in groups:
                writer.write_table(table(start, rows), row_group_size=rows)
                start += rows
    return start


def ids(batches: Iterable[dict[str, Any]]) -> np.ndarray:
    parts = [np.asarray(b["id"]) for b in batches]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def write_csv(path: Path, rows: int, *, offset: int = 0) -> Path:
    lines = ["id,city,amount,day"]
    cities = ["Lyon", "Oslo", "Lima", "Pune", "NA"]
    for i in range(offset, offset + rows):
        lines.append(f"{i},{cities[i % 5]},{(i * 37) % 101 / 4},{i % 28 + 1}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_module(directory: Path, csv: Path, *, body: str = "", name: str = "build_mod") -> str:
    """A preparation module in its own directory; returns its ``PATH.py:build`` target."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(
        textwrap.dedent(
            f'''
            """A small preparation: train/test by id, with a categorical column."""
            import time


            def build(ctx):
                t = ctx.read_csv({str(csv)!r}, name="src")
                ctx.categorical("city")
                t = t.mutate(big=(t.amount > 12).cast("int64")).order_by("id")
                {body}
                return {{"train": t.filter(t.id % 4 != 0), "test": t.filter(t.id % 4 == 0)}}
            '''
        )
    )
    return f"{path}:build"
