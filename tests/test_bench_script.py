"""scripts/bench.sh's machinery: its arguments, and the results file and table it writes.

The benchmarks themselves take minutes (they are run by hand, never asserted); here the real
script refuses bad arguments, and its results writer (benchmarks/_results.py, which bench.sh
runs last) reads logs laid out as bench.sh leaves them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "scripts" / "bench.sh"
RESULTS = ROOT / "benchmarks" / "_results.py"


def _bench(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_BENCH_")}
    env.update(CAUCE_BENCH_NO_SETUP="1", CAUCE_BENCH_OUT=str(tmp_path / "results"))
    return subprocess.run(
        ["bash", str(BENCH), *args], capture_output=True, text=True, env=env, timeout=60,
        check=False, cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "error: no benchmark named 'nosuch'; choose from: launch ingest"),
        (["--fast"], "error: unknown option --fast; usage: bash scripts/bench.sh"),
        (["launch", "--quick", "tune2"], "error: no benchmark named 'tune2'"),
    ],
)
def test_bench_refuses_bad_arguments_before_doing_anything(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = _bench(*args, tmp_path=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(message), out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "results").exists(), "nothing is run or written on bad arguments"


def test_bench_help_names_every_benchmark(tmp_path: Path) -> None:
    out = _bench("--help", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    names = ("launch", "ingest", "train_overhead", "phases", "tune", "serve", "spark_launch", "ui")
    names += ("predict", "pipeline")
    for name in names:
        assert name in out.stdout
    assert "--quick" in out.stdout


def _lay_out(logs: Path, name: str, code: int, stdout: str, stderr: str = "") -> None:
    """What bench.sh leaves for one benchmark: stdout, stderr, 'exit-code seconds'."""
    (logs / f"{name}.log").write_text(stdout)
    (logs / f"{name}.err").write_text(stderr)
    (logs / f"{name}.status").write_text(f"{code} 12\n")


def _results(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RESULTS), "--out", str(out), "--load-before", "0.5", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_results_table_has_every_headline_ratio_with_its_aim(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    machine = {"cores": 2, "load_before": 0.4, "load_after": 3.5, "noisy": True}
    launch = {"benchmark": "launch", "ratio": 0.7, **machine}
    ingest = {
        "benchmark": "ingest", "ratio": 0.75, "ratio_petastorm": None, "ratio_ray": 1.5,
        "ratio_hf": 20.0, "ratio_hf_streaming": 9.0, "ratio_decode_only": 0.9,
        "ratio_s3": None, "ratio_s3_native": None,
        "skipped": {"petastorm": "petastorm does not import"}, **machine,
    }  # fmt: skip
    _lay_out(logs, "launch", 0, "run 1\n" + json.dumps(launch) + "\n")
    _lay_out(logs, "ingest", 0, json.dumps(ingest) + "\n")
    (logs / "setup-ray.failed").write_text("ERROR: No matching distribution found for ray\n")
    out = _results(tmp_path, "--quick", "launch", "ingest")
    assert out.returncode == 0, out.stderr  # a missed aim (ingest's 0.75) is not a failure

    table = (tmp_path / "latest.md").read_text()
    assert out.stdout.strip() == table.strip(), "the table is printed too"
    assert "(quick: smoke runs, not for quoting)" in table
    assert "| launch | ratio | 0.700 | at most 1 | yes |" in table
    assert "| ingest | ratio | 0.750 | at least 0.8 | no |" in table
    assert "| ingest | ratio_petastorm | not measured | at least 5 |" in table
    assert "| ingest | ratio_ray | 1.500 | — |" in table
    assert "ratio_s3" not in table, "figures of an option bench.sh does not pass stay out"
    assert "0.4 → 3.5 noisy" in table
    assert "- ingest: petastorm skipped: petastorm does not import" in table
    assert "- environment ray could not be built: ERROR: No matching distribution" in table

    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["quick"] is True
    assert report["machine"]["cores"] == os.cpu_count()
    assert report["machine"]["load_before"] == 0.5
    assert report["benchmarks"]["launch"]["figures"] == launch
    assert report["benchmarks"]["ingest"]["seconds"] == 12
    assert report["setup"] == {"ray": "ERROR: No matching distribution found for ray"}


def test_results_a_benchmark_that_failed_fails_the_run(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    _lay_out(logs, "launch", 0, json.dumps({"ratio": 0.7}) + "\n")
    _lay_out(logs, "tune", 1, "(a) parallel 1\n", "Traceback ...\nSystemExit: error: it broke\n")
    _lay_out(logs, "serve", 0, "done, but no JSON\n")
    out = _results(tmp_path, "launch", "tune", "serve")
    assert out.returncode == 1
    table = (tmp_path / "latest.md").read_text()
    assert "| launch | ratio | 0.700 | at most 1 | yes |" in table
    assert "| tune | - | FAILED | — |  | exit 1: Traceback ... / SystemExit: error: it broke |" in (
        table
    )
    assert "| serve | - | FAILED | — |  | its last line is not a JSON object with a 'ratio' |" in (
        table
    )
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["benchmarks"]["tune"]["ok"] is False
    assert report["benchmarks"]["tune"]["exit_code"] == 1
