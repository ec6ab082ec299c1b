"""Spark's executors write a split's Parquet files through Python (pyarrow and fsspec).

Used for every destination that Spark's own Hadoop filesystems are not configured for here:
local folders and ``s3://`` (pyspark ships no ``hadoop-aws``), ``gs://``... Spark computes the
result; each executor writes whole part files straight to the store, the layout of
:mod:`._writer` (by row number: the same files DuckDB writes). The driver commits nothing here:
``prepare`` writes the manifest, the commit marker, after every file is in place.

Three passes over the result, which is kept (``persist``) in between: the rows of each partition
(``mapInArrow``), each row's number in the split (partition offsets + position; the result is in
the expression's order), then rows grouped by file number, sorted, and written.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from cauce.data._fs import Fs, portable_options, resolve
from cauce.data._writer import PartWriter
from cauce.data.api import DataError

log = logging.getLogger(__name__)

_ROW = "__cauce_row"
_CACHED_PARTITIONING = "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning"

#: Schemes Spark writes through its Hadoop filesystems (the user's Hadoop configuration: HDFS,
#: S3A with the hadoop-aws jars, Azure's ABFS...); every other destination goes through Python.
HADOOP_SCHEMES = frozenset({"hdfs", "viewfs", "s3a", "abfs", "abfss", "wasb", "wasbs", "ofs"})


def through_hadoop(uri: str) -> bool:
    scheme, sep, _ = uri.partition("://")
    return bool(sep) and scheme.lower() in HADOOP_SCHEMES


def write_split(
    df: Any,
    dest: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    rows_per_file: int,
    row_group_rows: int,
    compression: str,
) -> int:
    """Write DataFrame ``df`` as part files under ``dest`` (opened with ``storage_options``,
    which the executors get too); returns the rows written."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import LongType, StructField, StructType

    fs = resolve(dest, storage_options)
    target = _Target(
        fs, rows_per_file=rows_per_file, row_group_rows=row_group_rows, compression=compression
    )
    # Kept between the passes, in the partitions Spark's adaptive execution chose (by default
    # a cached plan keeps spark.sql.shuffle.partitions of them: 200 tiny tasks per pass).
    conf = df.sparkSession.conf
    before = conf.get(_CACHED_PARTITIONING, None)
    conf.set(_CACHED_PARTITIONING, "true")
    try:
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
    finally:
        if before is None:
            conf.unset(_CACHED_PARTITIONING)
        else:
            conf.set(_CACHED_PARTITIONING, before)
    try:
        offsets, total = {}, 0
        for part, rows in sorted(_pairs(df.mapInArrow(_count_rows, "part long, rows long"))):
            offsets[part] = total
            total += rows
        if total == 0:  # an empty split: one file with the schema, like DuckDB's
            target.writer(None, to_arrow_schema(df.schema), 0).close(empty=True)
            return 0
        files = -(-total // rows_per_file)
        indexed = df.mapInArrow(
            _numbering(offsets), StructType([*df.schema.fields, StructField(_ROW, LongType())])
        )
        grouped = indexed.repartition(files, F.floor(F.col(_ROW) / rows_per_file))
        done = _pairs(
            grouped.sortWithinPartitions(_ROW).mapInArrow(
                _writing(target),
                "file long, rows long",
            )
        )
    finally:
        df.unpersist()
    written = sum(rows for _, rows in done)
    if written != total:
        raise DataError(f"{dest}: the executors wrote {written} rows of {total}", path=dest)
    seen = len(fs.parquet_files(fs.root))
    if seen < files:
        raise DataError(
            f"{dest}: the executors wrote {files} files, this host sees {seen}: the folder is "
            "local to each host; on a cluster of several hosts use shared storage (s3://..., "
            "hdfs://...)",
            path=dest,
        )
    log.debug("%s: %d rows in %d files, written by the executors", dest, total, files)
    return total


def _pairs(df: Any) -> list[tuple[int, int]]:
    """The rows of a small two-column result, collected on the JVM side: PySpark's collect()
    leaves its result socket for the garbage collector (a ResourceWarning)."""
    return [(int(r.getLong(0)), int(r.getLong(1))) for r in df._jdf.collectAsList()]


class _Target:
    """The destination as the executors open it (fsspec's class, explicit options, the root)
    and the layout of its files."""

    def __init__(
        self, fs: Fs, *, rows_per_file: int, row_group_rows: int, compression: str
    ) -> None:
        self.cls, self.options = type(fs.fs), portable_options(fs)
        self.root, self.uri = fs.root, fs.uri
        self.rows_per_file, self.row_group_rows = rows_per_file, row_group_rows
        self.compression = compression

    def writer(self, fs: Fs | None, schema: pa.Schema, first_row: int) -> PartWriter:
        """Files from row ``first_row`` on; ``fs`` is one :meth:`open` gave (a new one if None)."""
        return PartWriter(
            fs or self.open(),
            schema,
            rows_per_file=self.rows_per_file,
            row_group_rows=self.row_group_rows,
            compression=self.compression,
            first_row=first_row,
        )

    def open(self) -> Fs:
        return Fs(self.cls(**self.options), self.root, self.uri)


def _partition() -> int:
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:  # not inside a Spark task
        raise RuntimeError("cauce's Spark writer runs inside Spark tasks only")
    return context.partitionId()


def _count_rows(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    rows = sum(b.num_rows for b in batches)
    yield pa.RecordBatch.from_pydict({"part": [_partition()], "rows": [rows]})


def _numbering(
    offsets: Mapping[int, int],
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def number(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        row = offsets.get(_partition(), 0)
        for batch in batches:
            numbers = pa.array(np.arange(row, row + batch.num_rows, dtype=np.int64))
            row += batch.num_rows
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, numbers], schema=batch.schema.append(pa.field(_ROW, pa.int64()))
            )

    return number


def _writing(target: _Target) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The task that writes the files of its partition (whole files, in row order)."""

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        fs = target.open()
        done: dict[int, int] = {}
        writer: PartWriter | None = None
        current = -1
        try:
            for batch in batches:
                rows = batch.column(batch.num_columns - 1).to_numpy()
                numbers = rows // target.rows_per_file
                data = batch.drop_columns([_ROW])
                cuts = [0, *(np.flatnonzero(np.diff(numbers)) + 1).tolist(), len(numbers)]
                for start, stop in itertools.pairwise(cuts):
                    if int(numbers[start]) != current:
                        if writer is not None:
                            writer.close()
                            done[current] = writer.written
                        current = int(numbers[start])
                        writer = target.writer(fs, data.schema, int(rows[start]))
                    assert writer is not None
                    writer.write(data.slice(start, stop - start))
            if writer is not None:
                writer.close()
                done[current] = writer.written
        finally:
            if writer is not None:
                writer.close()
        yield pa.RecordBatch.from_pydict({"file": list(done), "rows": list(done.values())})

    return write
