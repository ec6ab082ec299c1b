"""`cauce predict`: batch scoring of Parquet with DuckDB (here) and Spark (mapInPandas)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flights_fixtures import needs_flights
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
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "o").stat().st_mode & 0o777 == 0o777 & ~umask  # a folder like any other


def test_cli_predict_refusals(
    model: Path, tmp_path: Path, cauce_env: dict[str, str], records: list[dict[str, Any]]
) -> None:
    """Bad --input, --output and options: one line, exit 2, nothing written, the input intact."""
    pq.write_table(pa.Table.from_pylist(records[:5]), tmp_path / "in.parquet")
    data = (tmp_path / "in.parquet").read_bytes()
    (tmp_path / "in.csv").write_text("id\n1\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.parquet").write_bytes(data)
    file, folder = str(tmp_path / "in.parquet"), str(tmp_path / "d")
    for args, message in (
        ([file, f"{tmp_path}/./in.parquet", "--overwrite"], " is --input "),
        ([folder, str(tmp_path), "--overwrite"], " holds --input "),
        ([folder, str(tmp_path / "d" / "o")], " is inside --input "),
        ([str(tmp_path / "in.csv"), "o"], "in.csv is not a Parquet file ("),
        ([file, "o", "--split", "test"], "--split needs a prepared dataset's folder"),
        ([file, "/proc/o"], "cannot write --output /proc/o: "),
        ([file, str(tmp_path / "no" / "o")], "create it first"),
        ([file, "o", "--batch-size", "1" + "0" * 20], "--batch-size must be 1 to 1,000,000 rows"),
        ([folder, "o", "--stream", "--checkpoint", "c", "--batch-size", "0"], "rows, got 0"),
        ([file, "o", "--trigger", "5"], "--trigger is for --stream; add --stream or leave"),
    ):
        done = cauce(
            ["predict", str(model), "--input", args[0], "--output", *args[1:]],
            cauce_env,
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        assert message in done.stderr, done.stderr
    assert (tmp_path / "in.parquet").read_bytes() == (tmp_path / "d" / "a.parquet").read_bytes()
    assert data == (tmp_path / "in.parquet").read_bytes()
    assert {p.name for p in tmp_path.iterdir()} - {"home"} == {"d", "in.csv", "in.parquet"}
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["a.parquet"]


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


@needs_flights
@pytest.mark.slow
def test_cli_scores_a_split_keeps_lineage_and_refuses_to_overwrite(
    model: Path, flights: Path, tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """--split of a prepared dataset, the model's id in the output's metadata, file:// URIs,
    and exit 2 for every refusal (existing output, whole dataset without a split, no split)."""
    from cauce.data import DataNotFound, read_manifest
    from cauce.serve import OutputExists, predict_dataset, read_spec, scored_model

    out = tmp_path / "scored"
    args = ["predict", str(model), "--input", flights.as_uri(), "--output", out.as_uri()]
    done = cauce([*args, "--split", "test"], cauce_env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert pq.read_metadata(out / "part-00000.parquet").num_rows == 27_020
    info, spec = scored_model(str(out)), read_spec(model)
    assert info["sha256"] == spec.sha256 and info["lineage"] == spec.lineage
    assert info["id"] == f"{spec.name}:{spec.version}@{spec.sha256[:12]}"
    before = (out / "part-00000.parquet").stat().st_mtime_ns
    refused = cauce([*args, "--split", "test"], cauce_env, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr == (
        f"error: --output {out.as_uri()} exists; choose another or add --overwrite to replace it\n"
    )
    assert (out / "part-00000.parquet").stat().st_mtime_ns == before
    for message, split, source in (
        ("is a prepared dataset: name a split with --split", None, flights),
        ("no split 'tests'", "tests", flights),
        ("no such file or directory", None, tmp_path / "nowhere"),
    ):
        with pytest.raises(DataNotFound, match=message) as caught:
            predict_dataset(model, str(source), str(tmp_path / "x"), split=split)
        assert caught.value.exit_code == OutputExists.exit_code == 2
    rows = predict_dataset(
        model, str(flights), str(out), split="validation", overwrite=True, batch_size=4096
    )
    assert rows == read_manifest(flights).rows["validation"]
    assert pq.read_metadata(out / "part-00000.parquet").num_rows == rows
    assert json.loads(pq.read_schema(out / "part-00000.parquet").metadata[b"cauce:input"]) == {
        "dataset": str(flights),
        "content_hash": read_manifest(flights).content_hash,
        "split": "validation",
        "rows": rows,
    }
