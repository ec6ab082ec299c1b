"""The embedded engine: Ibis on DuckDB, results streamed to Parquet through pyarrow."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import duckdb
import ibis
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from cauce.data._fs import Fs, resolve
from cauce.data.api import DataError, Progress

if TYPE_CHECKING:
    import ibis.expr.types as ir

log = logging.getLogger(__name__)


class DuckDBEngine:
    """An in-memory DuckDB database per prepare; nothing outlives ``close``."""

    name = "duckdb"

    def __init__(self, master: str | None = None) -> None:
        if master is not None:
            raise DataError("spark_master is only for engine 'spark'")
        self.version = duckdb.__version__
        self._con: Any = ibis.duckdb.connect()

    @property
    def con(self) -> Any:
        return self._con

    def register(self, name: str, table: pa.Table) -> ir.Table:
        self._con.con.register(name, table)  # a view over the Arrow memory, no copy
        return self._con.table(name)

    def read_parquet(self, name: str, uri: str) -> ir.Table:
        # Through pyarrow and fsspec, so any URI fsspec knows works without DuckDB extensions;
        # DuckDB scans the dataset lazily, with projection and filter pushdown.
        fs = resolve(uri)
        files = fs.parquet_files(fs.root)
        if not files:
            raise DataError(f"{uri}: no Parquet files", path=uri)
        dataset = pds.dataset(files, format="parquet", filesystem=fs.fs)
        self._con.con.register(name, dataset)
        return self._con.table(name)

    def write(
        self,
        split: str,
        expr: ir.Table,
        dest: str,
        *,
        rows_per_file: int,
        row_group_rows: int,
        compression: str,
        progress: Progress | None,
    ) -> None:
        try:
            reader = self._con.to_pyarrow_batches(expr, chunk_size=min(row_group_rows, 65_536))
        except duckdb.Error as exc:
            raise DataError(f"split {split!r}: DuckDB cannot run it: {exc}") from exc
        fs = resolve(dest)
        fs.makedirs(fs.root)
        writer = _Writer(fs, reader.schema, rows_per_file, compression)
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        written = 0
        try:
            for batch in reader:
                pending.append(batch)
                pending_rows += batch.num_rows
                while pending_rows >= row_group_rows:
                    table = pa.Table.from_batches(pending, reader.schema)
                    group = table.slice(0, row_group_rows)
                    rest = table.slice(row_group_rows)
                    writer.write(group)
                    written += group.num_rows
                    pending, pending_rows = rest.to_batches(), rest.num_rows
                    if progress is not None:
                        progress(split, written)
            if pending_rows or writer.files == 0:
                writer.write(pa.Table.from_batches(pending, reader.schema))
                written += pending_rows
                if progress is not None:
                    progress(split, written)
        except duckdb.Error as exc:
            raise DataError(f"split {split!r}: DuckDB failed while running it: {exc}") from exc
        finally:
            writer.close()
        log.debug("%s: %d rows in %d files", dest, written, writer.files)

    def close(self) -> None:
        self._con.disconnect()


class _Writer:
    """Row groups into ``part-NNNNN.parquet`` files of at most ``rows_per_file`` rows."""

    def __init__(self, fs: Fs, schema: pa.Schema, rows_per_file: int, compression: str) -> None:
        self._fs = fs
        self._schema = schema
        self._rows_per_file = rows_per_file
        self._compression = compression
        self._writer: pq.ParquetWriter | None = None
        self._sink: Any = None
        self._rows = 0
        self.files = 0

    def write(self, table: pa.Table) -> None:
        while True:
            if self._writer is None:
                self._open()
            room = self._rows_per_file - self._rows
            part = table.slice(0, room)
            assert self._writer is not None
            self._writer.write_table(part, row_group_size=max(part.num_rows, 1))
            self._rows += part.num_rows
            if self._rows >= self._rows_per_file:
                self.close()
            table = table.slice(room)
            if table.num_rows == 0:
                return

    def _open(self) -> None:
        path = self._fs.join(f"part-{self.files:05d}.parquet")
        self._sink = path if self._fs.local else self._fs.fs.open(path, "wb")
        self._writer = pq.ParquetWriter(self._sink, self._schema, compression=self._compression)
        self._rows = 0
        self.files += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            if not isinstance(self._sink, str):
                self._sink.close()
            self._sink = None
