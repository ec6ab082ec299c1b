"""Spark-native scoring: a model as a Spark UDF on the standalone cluster (2 workers), and
`cauce predict --stream` on Structured Streaming (local[2]) killed, restarted and interrupted.

The model is the synthetic flights model (tests/test_serve_support.py); the rows are those of the
prepared flights dataset's test split (the ``flights`` fixture).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flights_fixtures import needs_flights
from helpers import cauce_popen
from test_serve_support import ServerProcess, make_models

pytest.importorskip("pyspark")
pytestmark = [needs_flights, pytest.mark.slow]

KEY = ["month", "day", "hour", "minute", "carrier", "flight", "origin", "dest"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models(tmp_path_factory.mktemp("models"))["flights"]


@pytest.fixture(scope="module")
def scored(model: Path, flights: Path, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """`cauce predict` (DuckDB) of the test split: the reference for every other scorer."""
    from cauce.serve import predict_dataset

    out = tmp_path_factory.mktemp("scored") / "test"
    predict_dataset(model, str(flights), str(out), split="test")
    return pq.read_table(out)


def _records(table: pa.Table, features: list[str]) -> list[dict[str, Any]]:
    rows = table.select(features).to_pylist()
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
            for r in rows]  # fmt: skip


def test_udf_on_the_cluster_equals_predict_and_the_server(  # noqa: PLR0917 (fixtures)
    model: Path,
    flights: Path,
    scored: pa.Table,
    spark_cluster: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    import cauce.serve
    from cauce.data import read_manifest

    loads = tmp_path / "loads.txt"
    # The executors' Python: PySpark reads the variable (not spark.pyspark.python) outside
    # spark-submit, as in a user's notebook.
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(spark_cluster.master).appName("udf-test")
    conf = {
        **spark_cluster.conf,
        "spark.executor.resource.gpu.amount": "0",
        "spark.executorEnv.CAUCE_MODEL_LOAD_LOG": str(loads),
        "spark.sql.execution.arrow.maxRecordsPerBatch": "1000",
        "spark.ui.showConsoleProgress": "false",
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    try:
        manifest = read_manifest(flights)
        files = [(flights / f.path).as_uri() for f in manifest.split("test").files]
        # The user's own DataFrame code: 4 partitions over both workers.
        frame = spark.read.parquet(*files).repartition(4)
        score = cauce.serve.spark_udf(spark, model)
        with_p = frame.withColumn("p", score(*score.features))
        both = with_p.withColumn("q", score(F.struct(*score.features))).select(*KEY, "p", "q")
        # (written, then read here: toPandas warns on pandas 3 and leaves a socket to the GC)
        both.write.parquet(str(tmp_path / "udf"))
        got = pq.read_table(tmp_path / "udf").to_pandas()
    finally:
        spark.stop()
    want = scored.select([*KEY, "probability"]).to_pandas()
    merged = got.merge(want, on=KEY, how="inner", validate="one_to_one")
    assert len(merged) == len(want) == 27_020
    np.testing.assert_allclose(merged["p"], merged["probability"], atol=1e-6)
    np.testing.assert_array_equal(merged["p"], merged["q"])  # columns or a struct: the same
    # loaded once per Python worker: each worker's pid once in the log, for 2 x 28 batches
    lines = loads.read_text().splitlines()
    pids = [line.split()[0] for line in lines]
    assert 1 <= len(pids) == len(set(pids)) <= 4, lines
    assert all(line.split()[1] == score.model_id for line in lines)

    features = list(score.features)
    sample = scored.slice(0, 300)
    with ServerProcess(model) as server:
        import httpx

        answer = httpx.post(
            f"{server.url}/v2/models/flights-synthetic/predict",
            json={"records": _records(sample, features)},
            timeout=60,
        )
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(
        answer.json()["outputs"]["probability"], sample["probability"].to_numpy(), atol=1e-6
    )


class Stream:
    """`cauce predict --stream` in a subprocess, its stderr read by a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = cauce_popen(args, env)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, "\n".join(self.lines[-30:])
            assert time.monotonic() < deadline, f"no {text!r}:\n" + "\n".join(self.lines[-30:])
            time.sleep(0.1)

    def end(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return code


def _batches(ckpt: Path, what: str) -> set[int]:
    folder = ckpt / what
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.exists() else set()


@pytest.fixture
def rows(scored: pa.Table) -> Iterator[pa.Table]:
    table = scored.slice(0, 4000).drop_columns(["probability"])
    yield table.append_column("row_id", pa.array(range(4000), pa.int64()))


def test_stream_scores_every_row_once_across_a_kill_and_ctrl_c(
    model: Path, scored: pa.Table, rows: pa.Table, tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    from cauce.serve import committed_files

    source, sink, ckpt = tmp_path / "in", tmp_path / "out", tmp_path / "ckpt"
    source.mkdir()

    def drop(i: int) -> None:  # a whole file appears at once: written aside, renamed in
        pq.write_table(rows.slice(i * 200, 200), tmp_path / f".{i}.parquet")
        os.rename(tmp_path / f".{i}.parquet", source / f"f{i:02d}.parquet")

    args = ["predict", str(model), "--stream", "--input", str(source), "--output", str(sink),
            "--checkpoint", str(ckpt), "--spark-master", "local[2]",
            "--trigger", "0.5"]  # fmt: skip
    drop(0)
    first = Stream(args, cauce_env)
    first.wait_for("streaming ")
    for i in range(1, 10):
        drop(i)
        time.sleep(0.3)
    first.wait_for("batch ")
    # SIGKILL in the middle of a micro-batch: its offsets are logged, its commit is not
    committed = _batches(ckpt, "commits")
    for i in range(10, 14):
        drop(i)
    deadline = time.monotonic() + 240
    while not _batches(ckpt, "offsets") - _batches(ckpt, "commits") - committed:
        assert time.monotonic() < deadline, "no micro-batch started"
        time.sleep(0.02)
    first.proc.send_signal(signal.SIGKILL)
    first.end()
    assert _batches(ckpt, "offsets") - _batches(ckpt, "commits"), "the batch was not cut short"

    second = Stream(args, cauce_env)
    second.wait_for("streaming ")
    for i in range(14, 20):
        drop(i)
        time.sleep(0.3)

    def done() -> int:
        return sum(pq.read_metadata(f).num_rows for f in committed_files(str(sink)))

    deadline = time.monotonic() + 240
    while done() < 4000:
        assert second.proc.poll() is None, "\n".join(second.lines[-30:])
        assert time.monotonic() < deadline, f"{done()} of 4000 rows after 240 s"
        time.sleep(0.2)
    second.proc.send_signal(signal.SIGINT)
    assert second.end() == 130, "\n".join(second.lines[-30:])
    assert any("stopped on Ctrl-C" in line for line in second.lines), second.lines
    assert any(line.startswith("batch ") and "rows/s" in line for line in second.lines)
    assert _batches(ckpt, "offsets") == _batches(ckpt, "commits")  # consistent: nothing open

    out = pa.concat_tables(pq.read_table(f) for f in committed_files(str(sink)))
    ids = out["row_id"].to_pylist()
    assert sorted(ids) == list(range(4000))  # every row, exactly once
    want = scored.slice(0, 4000)["probability"].to_numpy()
    got = out.sort_by("row_id")["probability"].to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
