"""A served model as a Spark UDF, for a user's own PySpark code.

    score = cauce.serve.spark_udf(spark, "runs/flights-1/model")
    df.withColumn("p", score(*score.features))             # the raw feature columns, in order
    df.withColumn("p", score(F.struct(*score.features)))   # or one struct of them, by name

A ``pandas_udf``: Spark hands it Arrow batches (``spark.sql.execution.arrow.maxRecordsPerBatch``
rows), which go through the model's own preprocessing and the model, exactly as ``cauce
predict`` and the server's ``/predict`` do. The model folder is shipped to the executors once
(a zip, ``SparkContext.addArchive``) and loaded once per executor Python worker, kept in a
module-level cache keyed by the model's path and id; PySpark reuses its Python workers, so
later batches and later queries find it loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

from cauce.serve._predict_spark import executor_model, ship_model
from cauce.serve._scoring import score_batch, spark_output_fields
from cauce.serve._spec import read_spec
from cauce.serve._store import local_model_dir
from cauce.serve.api import ServeError

__all__ = ["spark_udf"]


def _frame(features: tuple[str, ...], cols: tuple[Any, ...]) -> Any:
    """The UDF's arguments as one pandas DataFrame of named feature columns."""
    import pandas as pd

    if len(cols) == 1 and isinstance(cols[0], pd.DataFrame):
        return cols[0]
    if len(cols) != len(features):
        raise ServeError(
            f"the model's UDF takes its {len(features)} raw features {list(features)} in this "
            f"order (or one struct of them), got {len(cols)} columns"
        )
    return pd.DataFrame(dict(zip(features, cols, strict=True)))


def spark_udf(spark: Any, model: str | os.PathLike[str], *, batch_size: int = 8192) -> Any:
    """A pandas UDF that scores raw feature columns with the model at ``model`` (a folder or
    a URI such as ``s3://...``). It returns the model's output (one output: its values; more:
    a struct of them). ``udf.features`` lists the raw columns it takes, in order."""
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import types as T
    from pyspark.sql.pandas.functions import pandas_udf

    folder = Path(local_model_dir(os.fspath(model))).absolute()
    spec = read_spec(folder)
    if spec.preprocessing is None:
        raise ServeError(
            f"model {folder} has no preprocessing: the UDF takes raw feature columns; save "
            "the model with preprocessing="
        )
    features = tuple(spec.preprocessing.features)
    name = ship_model(spark, folder, spec.sha256)
    sha256 = spec.sha256
    fields = spark_output_fields(spec)
    single = len(fields) == 1
    out_type = fields[0].dataType if single else T.StructType(fields)
    outputs = [t.name for t in spec.outputs]

    def score(*cols: Any) -> Any:
        loaded = executor_model(name, sha256)
        batch = pa.RecordBatch.from_pandas(_frame(features, cols), preserve_index=False)
        results = score_batch(loaded, batch, batch_size)
        if single:
            return pd.Series(results[outputs[0]])
        return pd.DataFrame({k: list(v) if v.ndim > 1 else v for k, v in results.items()})

    score.__annotations__ = {
        "cols": Union[pd.Series, pd.DataFrame],  # noqa: UP007 (PySpark reads typing.Union)
        "return": pd.Series if single else pd.DataFrame,
    }
    udf: Any = pandas_udf(score, returnType=out_type)  # type: ignore[call-overload]
    udf.features = features
    udf.model_id = f"{spec.name}:{spec.version}@{sha256[:12]}"
    return udf
