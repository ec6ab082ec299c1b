"""Parquet part files of a split, laid out by row number alone.

Row ``i`` of a split goes to file ``part-{i // rows_per_file:05d}.parquet``, and a row group ends
at every multiple of ``row_group_rows`` and at the end of each file. The layout depends on the
rows and the two options only, not on which engine or how many tasks wrote them: DuckDB writes a
split as one stream, Spark's executors write one file each (``_spark_write``), and both give the
same files, so that a rank's shard (planned by row groups) reads the same rows either way.
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cauce.data._fs import Fs


def part_name(number: int) -> str:
    return f"part-{number:05d}.parquet"


class PartWriter:
    """Rows appended in order, from row ``first_row`` of the split, into part files of ``fs``.

    ``written`` counts the rows in closed row groups. ``close`` writes what is pending; with
    ``empty=True`` it writes a file with no rows when none was written (an empty split).
    """

    def __init__(
        self,
        fs: Fs,
        schema: pa.Schema,
        *,
        rows_per_file: int,
        row_group_rows: int,
        compression: str,
        first_row: int = 0,
    ) -> None:
        self._fs = fs
        self._schema = schema
        self._rows_per_file = rows_per_file
        self._group_rows = row_group_rows
        self._compression = compression
        self._row = first_row  # the split's row number of the next row to write
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._sink: Any = None
        self.written = 0
        self.files: list[str] = []

    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        batches = data.to_batches() if isinstance(data, pa.Table) else [data]
        for batch in batches:
            if batch.num_rows:
                self._pending.append(batch)
                self._pending_rows += batch.num_rows
        while self._pending_rows and self._pending_rows >= self._room():
            self._flush(self._room())

    def close(self, *, empty: bool = False) -> None:
        try:
            while self._pending_rows:
                self._flush(min(self._room(), self._pending_rows))
            if empty and not self.files:
                self._open()
                assert self._writer is not None
                self._writer.write_table(self._schema.empty_table())
        finally:
            self._close_file()

    def _room(self) -> int:
        """Rows until the next row group ends: at a multiple of either option."""
        to_group = self._group_rows - self._row % self._group_rows
        to_file = self._rows_per_file - self._row % self._rows_per_file
        return min(to_group, to_file)

    def _flush(self, rows: int) -> None:
        table = pa.Table.from_batches(self._pending, self._schema)
        group, rest = table.slice(0, rows), table.slice(rows)
        if self._writer is None:
            self._open()
        assert self._writer is not None
        self._writer.write_table(group, row_group_size=max(rows, 1))
        self._row += rows
        self.written += rows
        self._pending, self._pending_rows = rest.to_batches(), rest.num_rows
        if self._row % self._rows_per_file == 0:
            self._close_file()

    def _open(self) -> None:
        path = self._fs.join(part_name(self._row // self._rows_per_file))
        if self._fs.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._sink = path
        else:
            self._sink = self._fs.fs.open(path, "wb")
        self._writer = pq.ParquetWriter(self._sink, self._schema, compression=self._compression)
        self.files.append(path)

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            if not isinstance(self._sink, str):
                self._sink.close()
            self._sink = None
