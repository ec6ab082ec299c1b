"""The embedded engine: Ibis on DuckDB, results streamed to Parquet through pyarrow."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import duckdb
import ibis
import pyarrow as pa
import pyarrow.dataset as pds

from cauce._util.text import one_line
from cauce.data._fs import resolve
from cauce.data._writer import PartWriter
from cauce.data.api import DataError, DataNotFound, Progress

if TYPE_CHECKING:
    import ibis.expr.types as ir

log = logging.getLogger(__name__)


class DuckDBEngine:
    """An in-memory DuckDB database per prepare; nothing outlives ``close``."""

    name = "duckdb"
    errors: tuple[type[Exception], ...] = (duckdb.Error,)

    def __init__(
        self, master: str | None = None, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        if master is not None:
            raise DataError("spark_master is only for engine 'spark'")
        self.version = duckdb.__version__
        self._options = dict(storage_options or {})
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
        fs = resolve(uri, self._options)
        files = fs.parquet_files(fs.root)
        if not files:
            raise DataNotFound(f"{uri}: no Parquet files", path=uri)
        try:
            dataset = pds.dataset(files, format="parquet", filesystem=fs.fs)
        except (pa.ArrowException, OSError) as exc:  # ArrowInvalid: not Parquet (a CSV...)
            raise DataError(f"{uri}: cannot read as Parquet ({one_line(exc)})", path=uri) from exc
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
            raise DataError(f"split {split!r}: DuckDB cannot run it: {one_line(exc)}") from exc
        fs = resolve(dest, self._options)
        fs.makedirs(fs.root)
        writer = PartWriter(
            fs,
            reader.schema,
            rows_per_file=rows_per_file,
            row_group_rows=row_group_rows,
            compression=compression,
        )
        reported = -1
        try:
            for batch in reader:
                writer.write(batch)
                if progress is not None and writer.written not in (0, reported):
                    progress(split, reported := writer.written)
            writer.close(empty=True)
        except duckdb.Error as exc:
            raise DataError(
                f"split {split!r}: DuckDB failed while running it: {one_line(exc)}"
            ) from exc
        finally:
            writer.close()
        if progress is not None and writer.written != reported:
            progress(split, writer.written)
        log.debug("%s: %d rows in %d files", dest, writer.written, len(writer.files))

    def close(self) -> None:
        self._con.disconnect()
