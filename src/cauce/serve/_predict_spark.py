"""``cauce predict --engine spark``: ``mapInPandas`` over the input's partitions.

The model folder is shipped to the executors as a zip (``SparkContext.addArchive``) and
loaded once per Python worker (``_scoring.cached_model``). Paths go to Spark as Hadoop URIs,
so that Spark's own filesystems read and write them: ``hdfs://`` and ``file://`` as they are,
``s3://`` as ``s3a://`` (which needs Hadoop's S3A connector, ``hadoop-aws``, on Spark's
classpath). Spark's commit protocol publishes the output when the job succeeds; a failed job
leaves none.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cauce.serve._scoring import (
    cached_model,
    model_metadata,
    spark_output_fields,
    with_outputs,
)
from cauce.serve._spec import ModelSpec
from cauce.serve.api import OutputExists, ServeError

if TYPE_CHECKING:
    from cauce.data import Fs
    from cauce.serve._predict import ScoringInput

__all__ = ["hadoop_uri", "predict_spark", "scoring_session", "ship_model"]

log = logging.getLogger(__name__)


def hadoop_uri(fs: Fs, path: str) -> str:
    """``path`` of ``fs`` as Spark's Hadoop filesystems name it."""
    if fs.local:
        return Path(path).absolute().as_uri()
    uri = fs.display(path)
    return "s3a://" + uri.removeprefix("s3://") if uri.startswith("s3://") else uri


@contextlib.contextmanager
def scoring_session(
    master: str | None, app_name: str, *, log: str | os.PathLike[str] | None = None
) -> Iterator[Any]:
    """The active SparkSession if there is one and no ``master`` is asked for; else a new one
    on ``master`` (default ``local[2]``), stopped on exit. ``log``: where the JVM writes its
    output if this starts it (else to this process's terminal).

    The first such session of a machine, when it started its own ``local[N]`` JVM and its work
    went through (no exception out of the ``with``), leaves an archive of the classes it
    loaded, for the next ones to start faster (``cauce.cluster.spark.save_classes``: ~5 s after
    it stops, once)."""
    try:
        from pyspark.sql import SparkSession
    except ModuleNotFoundError:
        raise ServeError("--engine spark needs pyspark: pip install 'cauce[spark]'") from None
    from cauce.cluster.spark import save_classes, spark_session

    active = SparkSession.getActiveSession()
    if master is None and active is not None:
        yield active
        return
    master = master or "local[2]"
    if master.startswith("local"):
        # Python workers on this host run this interpreter (and find cauce), unless the
        # user chose one; SparkContext reads the variable when it starts.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = spark_session(
        master,
        app_name,
        {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"},
        loopback=True,
        log=log,
        record_classes=True,
    )
    try:
        yield session
    except BaseException:
        session.stop()
        raise
    session.stop()
    save_classes()  # after the work, so that its classes (MLlib's...) are in the archive


def _archive(folder: Path, sha256: str) -> Path:
    """The model folder as a zip named after its archive's hash, written once per host."""
    import tempfile
    import zipfile

    from cauce._util.files import atomic_write_bytes

    target = Path(tempfile.gettempdir()) / "cauce-models" / f"model-{sha256[:24]}.zip"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
            for file in sorted(folder.rglob("*")):
                if file.is_file():
                    zf.write(file, file.relative_to(folder).as_posix())
        atomic_write_bytes(target, buffer.getvalue())
    return target


def ship_model(session: Any, folder: Path, sha256: str) -> str:
    """Send the model folder to every executor (once per application) as a zip archive that
    Spark unpacks there (``SparkContext.addArchive``: a local folder cannot be added to a
    cluster application); its name for ``SparkFiles.get``."""
    archive = _archive(folder.absolute(), sha256)
    sc = session.sparkContext
    shipped: set[str] = getattr(sc, "_cauce_models", set())
    if archive.name not in shipped:
        sc.addArchive(str(archive))
        shipped.add(archive.name)
        sc._cauce_models = shipped
    return archive.name


def executor_model(name: str, sha256: str) -> Any:
    """On an executor: the model shipped as ``name``, loaded once per Python worker."""
    from pyspark import SparkFiles

    return cached_model(SparkFiles.get(name), sha256)


def _score_pandas(name: str, sha256: str, batch_size: int, frames: Iterator[Any]) -> Iterator[Any]:
    """Score pandas DataFrames (what ``mapInPandas`` passes) on a Spark executor."""
    import pyarrow as pa

    model = executor_model(name, sha256)
    for frame in frames:
        batch = pa.RecordBatch.from_pandas(frame, preserve_index=False)
        yield with_outputs(model, batch, batch_size).to_pandas()


def scored_frame(session: Any, frame: Any, folder: Path, spec: ModelSpec, batch_size: int) -> Any:
    """``frame`` with the model's outputs as new columns (lazy: a ``mapInPandas``). The output
    columns carry the model's id and lineage as field metadata (``cauce:model``)."""
    from pyspark.sql import types as T

    name = ship_model(session, folder, spec.sha256)
    produced = {t.name for t in spec.outputs}
    meta = model_metadata(spec, str(folder))
    fields = [f for f in frame.schema.fields if f.name not in produced]
    fields += [T.StructField(f.name, f.dataType, True, meta) for f in spark_output_fields(spec)]
    score = functools.partial(_score_pandas, name, spec.sha256, batch_size)
    return frame.mapInPandas(score, schema=T.StructType(fields))


def _hadoop_exists(session: Any, uri: str) -> bool:
    jvm = session.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(session.sparkContext._jsc.hadoopConfiguration())
    return bool(fs.exists(path))


def _hadoop_delete(session: Any, uri: str) -> None:
    jvm = session.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    path.getFileSystem(session.sparkContext._jsc.hadoopConfiguration()).delete(path, True)


def predict_spark(  # noqa: PLR0917 (one caller, predict_dataset)
    folder: Path,
    spec: ModelSpec,
    source: ScoringInput,
    out: Fs,
    master: str | None,
    batch_size: int,
    overwrite: bool,
) -> int:
    inputs = [hadoop_uri(source.fs, f) for f in source.files]
    target = hadoop_uri(out, out.root)
    with scoring_session(master, "cauce-predict") as session:
        from pyspark.errors import PySparkException

        existed = _hadoop_exists(session, target)
        if existed and not overwrite:
            raise OutputExists(out.uri)
        frame = session.read.parquet(*inputs)
        scored = scored_frame(session, frame, folder, spec, batch_size)
        try:
            scored.write.mode("overwrite" if overwrite else "errorifexists").parquet(target)
        except BaseException as exc:
            if not existed:  # Spark leaves the folder (empty, or _temporary) behind
                with contextlib.suppress(Exception):
                    _hadoop_delete(session, target)
            if isinstance(exc, PySparkException):
                raise ServeError(f"scoring on Spark failed: {str(exc).splitlines()[0]}") from exc
            raise
        rows: int = session.read.parquet(target).count()
    log.info("scored %d rows into %s on Spark", rows, target)
    return rows
