"""The cluster engine: Ibis on PySpark; executors write the Parquet files themselves (through
Python for local folders and ``s3://``, through Spark's Hadoop filesystems for ``hdfs://``)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ibis
import pyarrow as pa
import pyspark
from pyspark.errors import PySparkException
from pyspark.sql import SparkSession

from cauce.cluster.spark import spark_session
from cauce.data._fs import resolve
from cauce.data._parquet import open_parquet
from cauce.data._spark_write import through_hadoop, write_split
from cauce.data.api import DataError, Progress
from cauce.spec import spark_conf_pairs

if TYPE_CHECKING:
    import ibis.expr.types as ir

log = logging.getLogger(__name__)


class SparkEngine:
    """Uses the active SparkSession when there is one and no master is given; else starts one.

    A session it started is stopped by ``close``; one it found is left running, and only the
    temporary views this prepare registered are dropped.
    """

    name = "spark"
    errors: tuple[type[Exception], ...] = (PySparkException,)

    def __init__(
        self, master: str | None = None, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        self.version = pyspark.__version__
        self._options = dict(storage_options or {})
        self._warehouse = ""
        active = SparkSession.getActiveSession()
        if master is None and active is not None:
            self._session, self._owned = active, False
        else:
            # Spark's default warehouse is ./spark-warehouse: keep the user's directory clean.
            self._warehouse = tempfile.mkdtemp(prefix="cauce-spark-warehouse-")
            conf = {
                "spark.sql.execution.arrow.pyspark.enabled": "true",
                "spark.sql.warehouse.dir": self._warehouse,
                # The settings every Spark session of cauce takes (docs/spark.md).
                **spark_conf_pairs([], os.environ.get("CAUCE_SPARK_CONF")),
            }
            session = spark_session(master or "local[*]", "cauce-prepare", conf, loopback=True)
            # The executors' Python writes the files: it needs pyarrow and cauce, as this one
            # has (on a cluster, the same path on every host, as with a shared venv). PySpark
            # reads spark.pyspark.python only under spark-submit, so it is applied here.
            if conf.get("spark.pyspark.python"):
                session.sparkContext.pythonExec = conf["spark.pyspark.python"]
            elif not os.environ.get("PYSPARK_PYTHON"):
                session.sparkContext.pythonExec = sys.executable
            self._session, self._owned = session, True
        self._session.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
        self._con: Any = ibis.pyspark.connect(self._session)
        self._views: list[str] = []
        self._warned = False

    @property
    def con(self) -> Any:
        return self._con

    def register(self, name: str, table: pa.Table) -> ir.Table:
        # Arrow input arrives in many small partitions; fewer make every later stage cheaper.
        df = self._session.createDataFrame(table)
        df = df.coalesce(max(1, self._session.sparkContext.defaultParallelism))
        df.createOrReplaceTempView(name)
        self._views.append(name)
        return self._con.table(name)

    def read_parquet(self, name: str, uri: str) -> ir.Table:
        self._session.read.parquet(_hadoop_uri(uri)).createOrReplaceTempView(name)
        self._views.append(name)
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
        if not through_hadoop(dest):
            # Local folders, s3://, gs://...: the executors write through pyarrow and fsspec,
            # the same files DuckDB would (see _spark_write).
            if not self._warned and resolve(dest, self._options).local and len(self._hosts()) > 1:
                self._warned = True
                log.warning(
                    "output folder %s is local to the driver host; on a cluster of several "
                    "hosts use shared storage (s3://..., hdfs://...)",
                    dest.rsplit("/", 2)[0],
                )
            try:
                self._con._run_pre_execute_hooks(expr)
                df = self._session.sql(self._con.compile(expr))
                rows = write_split(
                    df,
                    dest,
                    storage_options=self._options,
                    rows_per_file=rows_per_file,
                    row_group_rows=row_group_rows,
                    compression=compression,
                )
            except PySparkException as exc:
                raise DataError(f"split {split!r}: Spark failed to run it: {exc}") from exc
            if progress is not None:
                progress(split, rows)
            return
        # Spark's own Hadoop filesystems (hdfs://, s3a:// with hadoop-aws...): row groups are
        # Spark's (parquet.block.size, by bytes): parquet-mr has no row limit.
        try:
            self._con.to_parquet(
                expr,
                _hadoop_uri(dest),
                compression=compression,
                maxRecordsPerFile=rows_per_file,
            )
        except PySparkException as exc:
            raise DataError(f"split {split!r}: Spark failed to run it: {exc}") from exc
        if progress is not None:
            fs = resolve(dest)
            rows = 0
            for path in fs.parquet_files(fs.root):
                with open_parquet(fs, path) as pf:
                    rows += pf.metadata.num_rows
            progress(split, rows)

    def _hosts(self) -> set[str]:
        """The hosts of the driver and the executors registered now."""
        try:
            status = self._session.sparkContext._jsc.sc().getExecutorMemoryStatus()
            keys = status.keysIterator()
            found = set()
            while keys.hasNext():
                found.add(str(keys.next()).rsplit(":", 1)[0])
            return found
        except Exception as exc:  # py4j: the JVM's API changed, or the context is gone
            log.debug("cannot list Spark's executors: %s", exc)
            return set()

    def close(self) -> None:
        for name in self._views:
            self._session.catalog.dropTempView(name)
        self._views.clear()
        if self._owned:
            self._session.stop()
        if self._warehouse:
            shutil.rmtree(self._warehouse, ignore_errors=True)


def _hadoop_uri(uri: str) -> str:
    """Local paths as ``file://`` URIs (Spark would resolve them against HDFS otherwise)."""
    if "://" in uri:
        return uri
    return "file://" + os.path.abspath(uri)
