"""Batch scoring throughput: `cauce predict` on DuckDB and on Spark local[2], and the model as a
Spark UDF (cauce.serve.spark_udf) against MLflow's ``mlflow.pyfunc.spark_udf`` on the same model.

    .venv/bin/python benchmarks/predict.py [--rows 200000] [--quick]

The model is the synthetic flights model (cauce.serve._synthetic, an MLP over 6 embedded
categorical and 9 numeric features), the data synthetic raw rows in Parquet. Every figure is
rows per second of wall time, best of ``--rounds`` after one warm-up run (Spark's session and
Python workers are started before the clock). MLflow's UDF wraps the same TorchScript model
and the same preprocessing in a ``PythonModel`` (what an MLflow user would log); when MLflow is
not installed, the peer is a hand-written ``pandas_udf`` that loads the model in every batch,
and the JSON says which (``"peer"``). The last line is JSON; ``ratio`` is cauce's UDF over the
peer's rows/s (aim: at least 1.5).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _machine import Machine, quick_default


def _data(folder: Path, rows: int) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cauce.serve._synthetic import NUMERIC, VOCABULARIES

    rng = np.random.default_rng(0)
    cols: dict[str, Any] = {}
    for name, vocab in VOCABULARIES.items():
        cols[name] = pa.array(np.asarray(vocab, dtype=object)[rng.integers(0, len(vocab), rows)])
    for name, mean, std in NUMERIC:
        cols[name] = pa.array(rng.normal(mean, std, rows))
    path = folder / "data"
    path.mkdir()
    table = pa.table(cols)
    for i in range(4):  # 4 files: 4 Spark partitions
        part = table.slice(i * rows // 4, rows // 4 + (rows % 4 if i == 3 else 0))
        pq.write_table(part, path / f"part-{i}.parquet", row_group_size=65536)
    return path


def _best(run: Callable[[], None], rows: int, rounds: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return rows / min(times)


def _mlflow_model(folder: Path, model: Path) -> str | None:
    try:
        import mlflow.pyfunc
    except ImportError:
        return None

    class CauceFlights(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
        def load_context(self, context: Any) -> None:
            from cauce.serve import load_model

            self.model = load_model(context.artifacts["model"])

        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            import pyarrow as pa

            from cauce.serve._scoring import score_batch

            batch = pa.RecordBatch.from_pandas(model_input, preserve_index=False)
            return score_batch(self.model, batch, 8192)["probability"]

    target = folder / "mlflow-model"
    mlflow.pyfunc.save_model(
        str(target), python_model=CauceFlights(), artifacts={"model": str(model)}
    )
    return str(target)


def _per_batch_udf(model: Path) -> Any:
    """The fallback peer: a pandas_udf that loads the TorchScript model for every batch."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    from cauce.serve import load_model
    from cauce.serve._synthetic import NUMERIC, VOCABULARIES

    names = [*VOCABULARIES, *(n for n, _, _ in NUMERIC)]

    @pandas_udf("float")  # type: ignore[call-overload,misc]
    def score(*cols: pd.Series) -> pd.Series:
        import pyarrow as pa

        from cauce.serve._scoring import score_batch

        loaded = load_model(model)
        batch = pa.RecordBatch.from_pandas(pd.DataFrame(dict(zip(names, cols, strict=True))))
        return pd.Series(score_batch(loaded, batch, 8192)["probability"])

    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick or quick_default():
        args.rows, args.rounds = 40_000, 1
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    from cauce.serve import predict_dataset, spark_udf
    from cauce.serve._synthetic import save_synthetic

    machine = Machine()
    folder = Path(tempfile.mkdtemp(prefix="cauce-bench-predict-"))
    model = save_synthetic(folder / "model")
    data = _data(folder, args.rows)
    out = str(folder / "out")
    figures: dict[str, Any] = {"rows": args.rows, "rounds": args.rounds}
    figures["duckdb_rows_per_s"] = _best(
        lambda: predict_dataset(model, str(data), out, overwrite=True), args.rows, args.rounds
    )
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        figures["spark_rows_per_s"] = _best(
            lambda: predict_dataset(model, str(data), out, engine="spark", overwrite=True),
            args.rows,
            args.rounds,
        )
        frame = spark.read.parquet(str(data))
        udf = spark_udf(spark, model)

        def cauce_udf() -> None:
            frame.select(udf(*udf.features).alias("p")).write.format("noop").mode(
                "overwrite"
            ).save()

        figures["udf_rows_per_s"] = _best(cauce_udf, args.rows, args.rounds)
        mlflow_model = _mlflow_model(folder, model)
        if mlflow_model is not None:
            import mlflow.pyfunc
            from pyspark.sql import functions as F

            peer = mlflow.pyfunc.spark_udf(spark, mlflow_model, result_type="float")
            peer_args: list[Any] = [F.struct(*udf.features)]
            figures["peer"] = "mlflow.pyfunc.spark_udf"
        else:
            peer = _per_batch_udf(model)
            peer_args = list(udf.features)
            figures["peer"] = "pandas_udf loading the TorchScript model per batch"

        def peer_udf() -> None:
            frame.select(peer(*peer_args).alias("p")).write.format("noop").mode("overwrite").save()

        figures["peer_rows_per_s"] = _best(peer_udf, args.rows, args.rounds)
    finally:
        spark.stop()
    figures["ratio"] = figures["udf_rows_per_s"] / figures["peer_rows_per_s"]
    figures["ratio_spark_duckdb"] = figures["spark_rows_per_s"] / figures["duckdb_rows_per_s"]
    figures.update(machine.finish())
    for key in ("duckdb", "spark", "udf", "peer"):
        print(f"{key:>8}: {figures[f'{key}_rows_per_s']:>12,.0f} rows/s", file=sys.stderr)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
