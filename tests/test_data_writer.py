"""The layout of part files by row number: the same files whoever writes them, in one stream
(DuckDB) or a file per Spark task starting at its first row."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cauce.data._fs import resolve
from cauce.data._writer import PartWriter


def _layout(folder: Path) -> dict[str, tuple[list[int], list[int]]]:
    out = {}
    for path in sorted(folder.glob("*.parquet")):
        pf = pq.ParquetFile(path)
        groups = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
        out[path.name] = (groups, pf.read().column("x").to_pylist())
    return out


def _writer(folder: Path, first: int = 0) -> PartWriter:
    schema = pa.schema([("x", pa.int64())])
    return PartWriter(
        resolve(str(folder)),
        schema,
        rows_per_file=100,
        row_group_rows=64,
        compression="zstd",
        first_row=first,
    )


def test_files_and_row_groups_depend_on_row_numbers_only(tmp_path: Path) -> None:
    rows = pa.record_batch([pa.array(range(250), pa.int64())], names=["x"])
    stream = _writer(tmp_path / "stream")
    for start in range(0, 250, 7):  # batches of any size
        stream.write(rows.slice(start, 7))
    stream.close(empty=True)
    assert stream.written == 250
    layout = _layout(tmp_path / "stream")
    # row groups end at every multiple of 64 and of 100 (a file's end)
    assert {name: groups for name, (groups, _) in layout.items()} == {
        "part-00000.parquet": [64, 36],
        "part-00001.parquet": [28, 64, 8],
        "part-00002.parquet": [50],
    }
    # one writer per file, each from its first row, as Spark's tasks write them
    for first in (200, 0, 100):
        task = _writer(tmp_path / "tasks", first)
        task.write(rows.slice(first, min(100, 250 - first)))
        task.close()
    assert _layout(tmp_path / "tasks") == layout


@pytest.mark.parametrize("empty", [True, False])
def test_an_empty_split_has_one_empty_file_when_asked(tmp_path: Path, empty: bool) -> None:
    writer = _writer(tmp_path)
    writer.close(empty=empty)
    assert [p.name for p in tmp_path.glob("*.parquet")] == (["part-00000.parquet"] if empty else [])
