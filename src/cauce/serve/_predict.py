"""``cauce predict``: score a Parquet dataset with a served model, on DuckDB or on Spark.

The output directory holds Parquet files with every input column and one column per model
output (1-D outputs as numbers, wider ones as fixed-size lists). Preprocessing is the model's
own, vectorized over Arrow columns: the same codes and scaling as ``/predict`` gives.

- ``duckdb``: this process reads the input in batches (DuckDB's Parquet reader, in file order)
  and writes ``part-00000.parquet``, with memory bounded by ``batch_size``.
- ``spark``: ``mapInPandas`` over the input's partitions; the model directory is shipped to the
  executors with ``SparkContext.addFile`` and loaded once per Python worker.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cauce.serve._format import LoadedModel, load_model
from cauce.serve._preprocess import Preprocessor
from cauce.serve._spec import read_spec
from cauce.serve.api import DATATYPES, FeatureError, Preprocessing, ServeError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["arrow_inputs", "predict_dataset"]

log = logging.getLogger(__name__)


def _column(batch: pa.RecordBatch, name: str) -> pa.Array:
    index = batch.schema.get_field_index(name)
    if index < 0:
        raise FeatureError(name, 0, "is missing: the input has no such column")
    return batch.column(index)


def arrow_inputs(pre: Preprocessing, batch: pa.RecordBatch) -> dict[str, npt.NDArray[Any]]:
    """A record batch's feature columns to the model's inputs, vectorized."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = batch.num_rows
    codes = np.zeros((n, len(pre.categorical)), dtype=np.int64)
    for j, feature in enumerate(pre.categorical):
        col = _column(batch, feature.name)
        vocab = pa.array(feature.vocabulary)
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if col.type != vocab.type:
            try:
                col = pc.cast(col, vocab.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                vocab = pc.cast(vocab, col.type)
        index = pc.index_in(col, value_set=vocab)
        codes[:, j] = pc.fill_null(pc.add(index, 1), 0).to_numpy(zero_copy_only=False)
    raw = np.empty((n, len(pre.numeric)), dtype=np.float64)
    for j, number in enumerate(pre.numeric):
        col = _column(batch, number.name)
        try:
            values = pc.cast(col, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise FeatureError(
                number.name, 0, f"must be numeric, the column is {col.type}"
            ) from None
        raw[:, j] = values.to_numpy(zero_copy_only=False)  # nulls become NaN, then the fill
    return Preprocessor(pre).assemble(codes, raw)


def _raw_inputs(model: LoadedModel, batch: pa.RecordBatch) -> dict[str, npt.NDArray[Any]]:
    """Without preprocessing: a column per input, named as the input."""
    out = {}
    for t in model.inputs:
        col = _column(batch, t.name).to_numpy(zero_copy_only=False)
        if col.dtype == object:
            col = np.stack(col)
        out[t.name] = np.asarray(col, dtype=DATATYPES[t.datatype])
    return out


def _score(model: LoadedModel, inputs: dict[str, Any], batch_size: int) -> dict[str, Any]:
    n = next(iter(inputs.values())).shape[0]
    parts = [
        model.predict({k: v[i : i + batch_size] for k, v in inputs.items()})
        for i in range(0, n, batch_size)
    ]
    return {t.name: np.concatenate([p[t.name] for p in parts]) for t in model.outputs}


def _input_files(path: str) -> list[str]:
    p = Path(path)
    if p.is_file():
        return [str(p)]
    if not p.is_dir():
        raise ServeError(f"--input {path}: no such file or directory")
    files = sorted(
        str(f)
        for f in p.rglob("*.parquet")
        if not any(part.startswith(("_", ".")) for part in f.relative_to(p).parts)
    )
    if not files:
        raise ServeError(f"--input {path}: holds no .parquet file")
    return files


def predict_dataset(
    model_dir: str | os.PathLike[str],
    input: str,
    output: str,
    *,
    engine: str = "duckdb",
    spark_master: str | None = None,
    batch_size: int = 8192,
) -> int:
    """Score ``input`` (Parquet file or directory) into the directory ``output``; rows scored."""
    if batch_size < 1:
        raise ServeError(f"batch_size must be >= 1, got {batch_size}")
    read_spec(Path(model_dir))
    if engine == "duckdb":
        return _predict_duckdb(str(model_dir), input, output, batch_size)
    if engine == "spark":
        return _predict_spark(str(model_dir), input, output, spark_master, batch_size)
    raise ServeError(f"engine must be duckdb or spark, got {engine!r}")


def _with_outputs(model: LoadedModel, batch: pa.RecordBatch, batch_size: int) -> pa.RecordBatch:
    import pyarrow as pa

    pre = model.spec.preprocessing
    inputs = arrow_inputs(pre, batch) if pre is not None else _raw_inputs(model, batch)
    results = _score(model, inputs, batch_size)
    columns = dict(zip(batch.schema.names, batch.columns, strict=True))
    for name, values in results.items():
        if values.ndim == 1:
            columns[name] = pa.array(values)
        else:
            flat = pa.array(values.reshape(-1))
            columns[name] = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(values.shape[1:])))
    return pa.RecordBatch.from_pydict(columns)


def _predict_duckdb(model_dir: str, input: str, output: str, batch_size: int) -> int:
    import duckdb
    import pyarrow.parquet as pq

    files = _input_files(input)
    model = load_model(model_dir)
    out = Path(output)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.absolute().parent))
    rows = 0
    try:
        con = duckdb.connect()
        try:
            reader = con.read_parquet(files).fetch_record_batch(batch_size)
            writer = None
            try:
                for batch in reader:
                    if batch.num_rows == 0:
                        continue
                    scored = _with_outputs(model, batch, batch_size)
                    if writer is None:
                        writer = pq.ParquetWriter(str(tmp / "part-00000.parquet"), scored.schema)
                    writer.write_batch(scored)
                    rows += batch.num_rows
            finally:
                if writer is not None:
                    writer.close()
        finally:
            con.close()
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("scored %d rows of %s into %s", rows, input, output)
    return rows


@functools.cache
def _executor_model(name: str) -> LoadedModel:
    from pyspark import SparkFiles

    return load_model(SparkFiles.get(name))


def _score_pandas(name: str, batch_size: int, frames: Iterator[Any]) -> Iterator[Any]:
    """Score pandas DataFrames (what ``mapInPandas`` passes) on a Spark executor."""
    import pyarrow as pa

    model = _executor_model(name)
    for frame in frames:
        batch = pa.RecordBatch.from_pandas(frame, preserve_index=False)
        yield _with_outputs(model, batch, batch_size).to_pandas()


def _predict_spark(
    model_dir: str, input: str, output: str, master: str | None, batch_size: int
) -> int:
    try:
        from pyspark.sql import SparkSession
        from pyspark.sql import types as T
    except ModuleNotFoundError:
        raise ServeError("--engine spark needs pyspark: pip install 'cauce[spark]'") from None
    from cauce.cluster.spark import spark_session

    spec = read_spec(model_dir)
    spark_types = {"FP32": T.FloatType(), "FP64": T.DoubleType(), "INT64": T.LongType(),
                   "INT32": T.IntegerType(), "BOOL": T.BooleanType()}  # fmt: skip
    active = SparkSession.getActiveSession()
    owned = master is not None or active is None
    if owned:
        master = master or "local[2]"
        if master.startswith("local"):
            # Python workers on this host run this interpreter (and find cauce), unless the
            # user chose one; SparkContext reads the variable when it starts.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        conf = {"spark.ui.enabled": "false"}
        session = spark_session(master, "cauce-predict", conf, loopback=True)
    else:
        assert active is not None
        session = active
    try:
        folder = Path(model_dir).absolute()
        session.sparkContext.addFile(str(folder), recursive=True)
        frame = session.read.parquet(input)
        produced = {t.name for t in spec.outputs}
        fields = [f for f in frame.schema.fields if f.name not in produced]
        for t in spec.outputs:
            kind = spark_types.get(t.datatype)
            if kind is None:
                raise ServeError(f"--engine spark: output datatype {t.datatype} is not supported")
            fields.append(T.StructField(t.name, kind if len(t.shape) == 1 else T.ArrayType(kind)))
        score = functools.partial(_score_pandas, folder.name, batch_size)
        scored = frame.mapInPandas(score, schema=T.StructType(fields))
        scored.write.mode("overwrite").parquet(output)
        rows: int = session.read.parquet(output).count()
    finally:
        if owned:
            session.stop()
    return rows
