"""Vectorized scoring of Arrow record batches, shared by ``cauce predict`` (DuckDB, Spark,
streaming) and :func:`cauce.serve.spark_udf`; and the model cache of a Spark Python worker.

The preprocessing is the model's own over Arrow columns: the same codes and scaling as the
server's ``/predict`` gives for the same raw records.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cauce.serve._format import LoadedModel, load_model
from cauce.serve._preprocess import Preprocessor
from cauce.serve._spec import ModelSpec
from cauce.serve.api import DATATYPES, FeatureError, Preprocessing, ServeError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "LOAD_LOG_ENV",
    "arrow_inputs",
    "cached_model",
    "model_metadata",
    "spark_output_fields",
    "with_outputs",
]

log = logging.getLogger(__name__)

#: When set (in an executor's environment: ``spark.executorEnv.CAUCE_MODEL_LOAD_LOG``), every
#: model load by :func:`cached_model` appends ``<pid> <model id>`` to this file: an audit of how
#: often a cluster loads a model (once per Python worker).
LOAD_LOG_ENV = "CAUCE_MODEL_LOAD_LOG"

_cache: dict[tuple[str, str], LoadedModel] = {}
_cache_lock = threading.Lock()


def model_id(spec: ModelSpec) -> str:
    """``name:version@sha256-prefix``: what scored output and load logs name a model by."""
    return f"{spec.name}:{spec.version}@{spec.sha256[:12]}"


def model_metadata(spec: ModelSpec, path: str) -> dict[str, str]:
    """Parquet key-value metadata of scored output: the model's id and lineage."""
    info = {
        "id": model_id(spec),
        "name": spec.name,
        "version": spec.version,
        "sha256": spec.sha256,
        "path": path,
        "lineage": spec.lineage,
    }
    return {"cauce:model": json.dumps(info, sort_keys=True)}


def cached_model(path: str, sha256: str) -> LoadedModel:
    """The model at ``path``, loaded once per process (a Spark Python worker) and kept."""
    key = (path, sha256)
    with _cache_lock:
        found = _cache.get(key)
        if found is None:
            found = load_model(path)
            if sha256 and found.spec.sha256 != sha256:
                raise ServeError(
                    f"{path}: the model changed since the job started (sha256 "
                    f"{found.spec.sha256[:12]}, expected {sha256[:12]})"
                )
            _cache[key] = found
            audit = os.environ.get(LOAD_LOG_ENV)
            if audit:
                with open(audit, "a", encoding="utf-8") as f:
                    f.write(f"{os.getpid()} {model_id(found.spec)}\n")
        return found


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


def score_batch(
    model: LoadedModel, batch: pa.RecordBatch, batch_size: int
) -> dict[str, npt.NDArray[Any]]:
    """The model's outputs for every row of ``batch``, run ``batch_size`` rows at a time."""
    pre = model.spec.preprocessing
    inputs = arrow_inputs(pre, batch) if pre is not None else _raw_inputs(model, batch)
    n = batch.num_rows
    parts = [
        model.predict({k: v[i : i + batch_size] for k, v in inputs.items()})
        for i in range(0, n, batch_size)
    ]
    return {t.name: np.concatenate([p[t.name] for p in parts]) for t in model.outputs}


def output_array(values: npt.NDArray[Any]) -> pa.Array:
    """One output as an Arrow column: numbers, or fixed-size lists for wider outputs."""
    import pyarrow as pa

    if values.ndim == 1:
        return pa.array(values)
    flat = pa.array(values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, int(np.prod(values.shape[1:])))


def with_outputs(model: LoadedModel, batch: pa.RecordBatch, batch_size: int) -> pa.RecordBatch:
    """``batch`` with one more column per model output."""
    import pyarrow as pa

    columns = dict(zip(batch.schema.names, batch.columns, strict=True))
    for name, values in score_batch(model, batch, batch_size).items():
        columns[name] = output_array(values)
    return pa.RecordBatch.from_pydict(columns)


def spark_output_fields(spec: ModelSpec) -> list[Any]:
    """Spark ``StructField``s of the model's outputs (as :func:`with_outputs` makes them)."""
    from pyspark.sql import types as T

    kinds = {"FP32": T.FloatType(), "FP64": T.DoubleType(), "INT64": T.LongType(),
             "INT32": T.IntegerType(), "BOOL": T.BooleanType()}  # fmt: skip
    fields = []
    for t in spec.outputs:
        kind = kinds.get(t.datatype)
        if kind is None:
            raise ServeError(f"Spark scoring: output datatype {t.datatype} is not supported")
        fields.append(T.StructField(t.name, kind if len(t.shape) == 1 else T.ArrayType(kind)))
    return fields
