"""`cauce predict`: batch scoring of Parquet with DuckDB (here) and Spark (mapInPandas)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import cauce
from test_serve_support import make_models

pytest.importorskip("torch")
pytestmark = pytest.mark.framework


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_models(tmp_path_factory.mktemp("models"))["flights"]


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    from cauce.serve._synthetic import synthetic_records

    return synthetic_records(500, seed=11, unknown=0.2)


@pytest.fixture
def dataset(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    """Two files in a directory, with a key column and NaN (not only null) for missing numbers."""
    folder = tmp_path / "in"
    folder.mkdir()
    table = pa.Table.from_pylist([{"id": i, **r} for i, r in enumerate(records)])
    nan_temp = pa.array([np.nan if v is None else v for v in table["wx_temp"].to_pylist()])
    table = table.set_column(table.schema.get_field_index("wx_temp"), "wx_temp", nan_temp)
    pq.write_table(table.slice(0, 300), folder / "part-0.parquet", row_group_size=100)
    pq.write_table(table.slice(300), folder / "part-1.parquet")
    (folder / "_manifest.json").write_text("{}")  # not data: skipped
    return folder


def _offline(model: Path, records: list[dict[str, Any]]) -> Any:
    from cauce.serve import load_model

    loaded = load_model(model)
    return loaded.predict(loaded.preprocess(records))["probability"]


def _scored(folder: Path) -> pa.Table:
    return pq.read_table(folder).sort_by("id")


def test_duckdb_scores_every_row_like_the_server(
    model: Path, dataset: Path, tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    from cauce.serve import predict_dataset

    rows = predict_dataset(model, str(dataset), str(tmp_path / "out"), batch_size=64)
    assert rows == 500
    table = _scored(tmp_path / "out")
    assert table.column_names[:2] == ["id", "carrier"] and table.column_names[-1] == "probability"
    assert table.schema.field("probability").type == pa.float32()
    np.testing.assert_allclose(table["probability"].to_numpy(), _offline(model, records), rtol=1e-5)


def test_missing_column_is_named(model: Path, tmp_path: Path) -> None:
    from cauce.serve import FeatureError, predict_dataset

    pq.write_table(pa.table({"carrier": ["UA"]}), tmp_path / "x.parquet")
    with pytest.raises(FeatureError, match="'origin' is missing: the input has no such column"):
        predict_dataset(model, str(tmp_path / "x.parquet"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_cli_predict(model: Path, dataset: Path, tmp_path: Path, cauce_env: dict[str, str]) -> None:
    done = cauce(
        ["predict", str(model), "--input", str(dataset), "--output", str(tmp_path / "o")],
        cauce_env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "scored 500 rows" in done.stderr
    assert _scored(tmp_path / "o").num_rows == 500


def test_spark_missing_names_the_extra(model: Path, dataset: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['pyspark'] = None\n"
        "from cauce.cli.main import main\n"
        f"sys.exit(main(['predict', {str(model)!r}, '--input', {str(dataset)!r}, "
        f"'--output', {str(tmp_path / 'o')!r}, '--engine', 'spark']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == "error: --engine spark needs pyspark: pip install 'cauce[spark]'"


@pytest.mark.slow
def test_spark_scores_like_duckdb(
    model: Path,
    dataset: Path,
    tmp_path: Path,
    cauce_env: dict[str, str],
    records: list[dict[str, Any]],
) -> None:
    pytest.importorskip("pyspark")
    done = cauce(
        [
            "predict",
            str(model),
            "--input",
            str(dataset),
            "--output",
            str(tmp_path / "s"),
            "--engine",
            "spark",
            "--spark-master",
            "local[2]",
        ],
        cauce_env,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = _scored(tmp_path / "s")
    assert table.num_rows == 500
    np.testing.assert_allclose(table["probability"].to_numpy(), _offline(model, records), rtol=1e-5)
