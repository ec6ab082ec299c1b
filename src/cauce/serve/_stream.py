"""``cauce predict --stream``: score files as they arrive, on Spark Structured Streaming.

The source is a folder that Parquet, JSON or CSV files arrive in (each file whole: write it
elsewhere and rename it in, as Spark's file source expects). Its schema is the model's
signature: the raw features, typed as the model reads them (categorical: string, or long for
integer vocabularies; numeric: double); for Parquet, the first file already in the folder when
the stream starts gives the schema (its own types and its other columns, an id or a label,
carried to the sink as they are).

The sink is Parquet in append mode with Spark's file-sink log (``OUTPUT/_spark_metadata``):
together with the checkpoint, every row is in the committed output exactly once, whatever
kills the stream (a batch that did not commit is run again on restart, under the same id, and
its files are committed once). Read the output with Spark, or with :func:`committed_files`:
files of a batch that a kill interrupted may lie in the folder but are in no commit.

Ctrl-C and SIGTERM stop the stream between micro-batches: the running one finishes and commits
first. Kafka as a source: the ``kafka`` format of Spark (``spark-sql-kafka`` on its classpath);
cauce does not test it here (see docs/spark.md).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cauce._util.signals import handle_signals
from cauce.data import resolve
from cauce.serve._predict import check_batch_size
from cauce.serve._predict_spark import hadoop_uri, scored_frame, scoring_session
from cauce.serve._spec import ModelSpec, read_spec
from cauce.serve._store import local_model_dir
from cauce.serve.api import ServeError, SettingsError

__all__ = ["StreamResult", "committed_files", "signature_schema", "stream_predict"]

log = logging.getLogger(__name__)

FORMATS = ("parquet", "json", "csv")


@dataclass(frozen=True)
class StreamResult:
    """How a stream ended: micro-batches and rows it scored, and the signal that stopped it."""

    batches: int
    rows: int
    signal: int | None


def signature_schema(spec: ModelSpec) -> Any:
    """The raw features of the model as a Spark ``StructType``."""
    from pyspark.sql import types as T

    pre = spec.preprocessing
    if pre is None:
        raise ServeError(f"model {spec.name!r} has no preprocessing: a stream scores raw records")
    fields = []
    for c in pre.categorical:
        numeric = c.vocabulary and all(isinstance(v, int) for v in c.vocabulary)
        fields.append(T.StructField(c.name, T.LongType() if numeric else T.StringType()))
    fields += [T.StructField(n.name, T.DoubleType()) for n in pre.numeric]
    return T.StructType(fields)


def _schema(session: Any, spec: ModelSpec, source: str, fmt: str) -> Any:
    from pyspark.sql import types as T

    schema = signature_schema(spec)
    if fmt != "parquet":
        return schema
    fs = resolve(source)
    first = fs.parquet_files(fs.root)[:1] if fs.exists(fs.root) else []
    if not first:
        return schema
    # The file's own types (Parquet columns are read as written; the scoring casts them), and
    # every feature the model needs, so that a file without one fails by its name.
    seen = session.read.parquet(hadoop_uri(fs, first[0])).schema
    missing = [f for f in schema.fields if f.name not in seen.fieldNames()]
    return T.StructType([*seen.fields, *missing])


def committed_files(output: str) -> list[str]:
    """The Parquet files that a stream's commits hold (its ``_spark_metadata`` log), in the
    order they were committed; files of interrupted batches are left out."""
    fs = resolve(output)
    log_dir = fs.join("_spark_metadata")
    entries: dict[str, bool] = {}
    names = [n for n in fs.fs.ls(log_dir, detail=False) if not n.rsplit("/", 1)[-1].startswith(".")]

    def batch(name: str) -> int:
        stem = name.rsplit("/", 1)[-1].split(".", maxsplit=1)[0]
        return int(stem) if stem.isdigit() else -1

    for name in sorted(names, key=batch):
        if batch(name) < 0:
            continue
        lines = fs.read_bytes(name).decode().splitlines()[1:]  # first line: the log's version
        for line in lines:
            entry = json.loads(line)
            entries[entry["path"]] = entry.get("action", "add") == "add"
    prefix = "file://"
    return [p.removeprefix(prefix) for p, added in entries.items() if added]


def stream_predict(
    model_dir: str | os.PathLike[str],
    input: str,
    output: str,
    checkpoint: str,
    *,
    fmt: str = "parquet",
    spark_master: str | None = None,
    batch_size: int = 8192,
    trigger_s: float = 1.0,
    max_files_per_trigger: int | None = None,
    progress: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> StreamResult:
    """Score the files arriving in ``input`` into ``output`` until SIGINT or SIGTERM (or
    ``stop()`` returns true); ``checkpoint`` keeps the stream's state for a restart."""
    if fmt not in FORMATS:
        raise SettingsError(f"--input-format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not trigger_s > 0:
        raise SettingsError(f"--trigger must be > 0 seconds, got {trigger_s}")
    check_batch_size(batch_size)
    folder = Path(local_model_dir(os.fspath(model_dir))).absolute()
    spec = read_spec(folder)
    say = progress or (lambda line: log.info("%s", line))
    stopping: list[int] = []
    # The signal handlers go in after the session: PySpark's SparkContext installs its own
    # SIGINT handler (cancel every job, raise KeyboardInterrupt), which would cut a batch short.
    with (
        scoring_session(spark_master, "cauce-predict-stream") as session,
        handle_signals((signal.SIGINT, signal.SIGTERM), stopping.append),
    ):
        session.sparkContext.setLogLevel("ERROR")  # the progress lines below say what happens
        source, sink = resolve(input), resolve(output)
        source.makedirs(source.root)
        reader = session.readStream.schema(_schema(session, spec, input, fmt)).format(fmt)
        if fmt == "csv":
            reader = reader.option("header", "true")
        if max_files_per_trigger:
            reader = reader.option("maxFilesPerTrigger", str(max_files_per_trigger))
        frame = reader.load(hadoop_uri(source, source.root))
        query = (
            scored_frame(session, frame, folder, spec, batch_size)
            .writeStream.format("parquet")
            .outputMode("append")
            .option("path", hadoop_uri(sink, sink.root))
            .option("checkpointLocation", hadoop_uri(resolve(checkpoint), resolve(checkpoint).root))
            .trigger(processingTime=f"{trigger_s} seconds")
            .start()
        )
        say(f"streaming {input} ({fmt}) into {output}; checkpoint {checkpoint}; Ctrl-C stops")
        return _watch(query, say, stopping, stop)


def _first_line(exc: object) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _watch(
    query: Any, say: Callable[[str], None], stopping: list[int], stop: Callable[[], bool] | None
) -> StreamResult:
    """Report each micro-batch; on a signal, let the running batch commit, then stop."""
    seen = -1
    batches = rows = 0

    def report() -> None:
        nonlocal seen, batches, rows
        for p in query.recentProgress:
            if p["batchId"] <= seen:
                continue
            seen = p["batchId"]
            n = int(p["numInputRows"])
            if n == 0:
                continue
            ms = float(p["durationMs"].get("triggerExecution", 0))
            batches += 1
            rows += n
            rate = n / (ms / 1000) if ms else 0.0
            say(f"batch {seen}: {n:,} rows in {ms:,.0f} ms ({rate:,.0f} rows/s)")

    from pyspark.errors import StreamingQueryException

    try:
        while query.isActive and not stopping and not (stop and stop()):
            query.awaitTermination(0.5)
            report()
    except StreamingQueryException as exc:
        raise ServeError(f"the stream failed: {_first_line(exc)}") from exc
    if query.isActive:
        deadline = time.monotonic() + 600
        while query.status["isTriggerActive"] and time.monotonic() < deadline:
            time.sleep(0.05)  # the running micro-batch commits before the query stops
        query.stop()
    report()
    failed = query.exception()
    if failed is not None:
        raise ServeError(f"the stream failed: {_first_line(failed)}")
    names = {int(signal.SIGINT): "Ctrl-C", int(signal.SIGTERM): "SIGTERM"}
    how = names.get(stopping[0] if stopping else 0, "request")
    say(f"stopped on {how} after {batches} batches, {rows:,} rows; the checkpoint is consistent")
    return StreamResult(batches, rows, stopping[0] if stopping else None)
