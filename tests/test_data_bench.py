"""benchmarks/ingest.py runs end to end on a small dataset (its speed is not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "ingest.py"


@pytest.mark.slow
def test_ingest_benchmark_smoke(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("ibis")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_BENCH_")}
    env["TMPDIR"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, str(BENCH), "--rows", "20000", "--runs", "1", "--warmup", "0"],
        capture_output=True, text=True, env=env, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["rows"] == 20_000 and figures["ratio"] > 0
    assert set(figures["rows_per_s_median"]) >= {"cauce", "pyarrow", "cauce_shuffled"}
    if "petastorm" in figures["skipped"]:
        assert figures["ratio_petastorm"] is None
    assert not list(tmp_path.iterdir()), "the benchmark left its dataset behind"


@pytest.mark.slow
def test_ingest_benchmark_s3_smoke(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("ibis")
    pytest.importorskip("moto")
    pytest.importorskip("s3fs")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAUCE_BENCH_", "AWS_"))}
    env["TMPDIR"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, str(BENCH), "--rows", "20000", "--runs", "1", "--warmup", "0", "--s3"],
        capture_output=True, text=True, env=env, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["ratio_s3"] > 0 and figures["ratio_s3_native"] > 0
    assert set(figures["rows_per_s_median"]) >= {"cauce_s3", "cauce_s3_fsspec", "pyarrow_s3"}
    assert not list(tmp_path.iterdir()), "the benchmark left its dataset behind"
