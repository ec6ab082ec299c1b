"""``cauce prepare`` with a bad input, bad SQL or a bad output: one line ``error: ...`` with the
exit code of docs/scripting.md, no traceback, and the previous dataset left as it was (a
function that raises: its traceback, then that line)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from cauce.data import DataError, DataNotFound, PrepareContext, prepare
from cauce.data._loading import load_function
from helpers import cauce

pytest.importorskip("ibis")
pytest.importorskip("duckdb")

BUILDS = """
import os

HERE = os.path.dirname(os.path.abspath(__file__))

def good(ctx):
    return {"train": ctx.read_csv(os.path.join(HERE, "t.csv"))}

def folder(ctx):
    return {"train": ctx.read_csv(HERE)}

def binary(ctx):
    return {"train": ctx.read_csv(os.path.join(HERE, "bin.csv"))}

def bad_sql(ctx):
    ctx.read_csv(os.path.join(HERE, "t.csv"), name="d")
    return {"train": ctx.sql("SELEC * FROM d")}

def raises(ctx):
    raise ValueError("no column 'dep_time'")
"""

# (function, --out, extra options) -> exit code and the start of the one line after "error: "
CASES: list[tuple[str, str, list[str], int, str]] = [
    ("folder", "ds", [], 1, "{code}: is a folder, not a file (read_csv reads one file"),
    ("binary", "ds", [], 1, "{code}/bin.csv: cannot parse as CSV (its first line has column"),
    (
        "bad_sql",
        "ds",
        [],
        1,
        'ctx.sql: your SQL does not run on duckdb: Parser Error: syntax error at or near "*" '
        "(query: SELEC * FROM d)",
    ),
    ("good", "file.csv", [], 1, "cannot write to file.csv: it is a file, not a folder"),
    ("good", "/proc/nope", [], 1, "cannot write to /proc/nope: "),
    ("good", "", [], 2, "--out must name the dataset's folder (a path or URI), got ''"),
    ("good", "ds", ["--rows-per-file", "0"], 2, "--rows-per-file must be >= 1, got 0"),
    ("good", "ds", ["--row-group-rows", "-1"], 2, "--row-group-rows must be >= 1, got -1"),
]


def test_cli_refuses_in_one_line_and_leaves_the_dataset_whole(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cauce_env: dict[str, str],
) -> None:
    from cauce.cli.main import main

    code = tmp_path / "code"
    code.mkdir()
    (code / "builds.py").write_text(textwrap.dedent(BUILDS))
    (code / "t.csv").write_text("a,b\n1,x\n2,y\n")
    (code / "bin.csv").write_bytes(b"id,\xff\xfe\n1,2\n")  # as binary files often start
    work = tmp_path / "work"
    work.mkdir()
    (work / "file.csv").write_text("keep me\n")
    monkeypatch.chdir(work)
    assert main(["prepare", str(code / "builds.py:good"), "--out", "ds"]) == 0
    kept = (work / "ds" / "_manifest.json").read_bytes()
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    capsys.readouterr()
    for function, out, extra, exit_code, message in CASES:
        argv = ["prepare", str(code / f"builds.py:{function}"), "--out", out, *extra]
        got = main(argv)
        err = capsys.readouterr().err
        assert (got, err.splitlines()[-1:]) == (exit_code, [err.strip()]), (argv, err)
        assert err.startswith(f"error: {message.format(code=code)}"), (argv, err)
        # nothing half-written: the dataset is the one before, no other folder or file
        assert sorted(p.relative_to(work) for p in work.rglob("*")) == before, argv
        assert (work / "ds" / "_manifest.json").read_bytes() == kept, argv
        assert (work / "file.csv").read_text() == "keep me\n"
    # and as a user types it: one line, no traceback
    done = cauce(["prepare", "builds.py:binary", "--out", str(work / "ds")], cauce_env, cwd=code)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {code}/bin.csv: cannot parse as CSV (its first line has column names that are "
        "not UTF-8 text)"
    ]
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before
    # the function's own exception: its traceback (the user's line in it), then one error line
    done = cauce(["prepare", "builds.py:raises", "--out", str(work / "ds")], cauce_env, cwd=code)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):", done.stderr
    assert "raise ValueError(\"no column 'dep_time'\")" in done.stderr
    assert "in builds.py:raises, the prepare function: nothing was written" in done.stderr
    assert lines[-1] == (
        "error: cauce prepare builds.py:raises failed: ValueError: no column 'dep_time' "
        f"(traceback above); {work / 'ds'} is as it was"
    )
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before
    assert (work / "ds" / "_manifest.json").read_bytes() == kept


def test_api_errors_name_the_problem(tmp_path: Path) -> None:
    def build(ctx: PrepareContext) -> dict[str, Any]:
        return {"train": ctx.sql("SELECT 1 AS one")}

    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"^rows_per_file must be >= 1, got 0$"):
        prepare(build, out, rows_per_file=0)
    with pytest.raises(DataError, match=r"^row_group_rows must be >= 1, got 0$"):
        prepare(build, out, row_group_rows=0)
    with pytest.raises(DataError, match=r"^out must name the dataset's folder"):
        prepare(build, "")

    def half_float(ctx: PrepareContext) -> dict[str, Any]:
        return {"train": ctx.table("h", pa.table({"x": np.ones(2, np.float16)}))}

    def not_parquet(ctx: PrepareContext) -> dict[str, Any]:
        return {"train": ctx.read_parquet(tmp_path / "t.csv")}

    def dialect(ctx: PrepareContext) -> dict[str, Any]:
        return {"train": ctx.sql("SELECT 1", dialect="nodialect")}

    (tmp_path / "t.csv").write_text("a\n1\n")
    with pytest.raises(DataError, match=r"^input 'h': duckdb cannot take it as a table: Not imp"):
        prepare(half_float, out)
    with pytest.raises(DataError, match=r"t\.csv: cannot read as Parquet \(Error creating dataset"):
        prepare(not_parquet, out)
    with pytest.raises(DataError, match=r"^ctx\.sql: Unknown dialect 'nodialect'"):
        prepare(dialect, out)
    missing = str(tmp_path / "missing.csv")
    with pytest.raises(DataNotFound, match=f"^{missing}: input not found$") as caught:
        prepare(lambda ctx: {"train": ctx.read_csv(missing)}, out)
    assert caught.value.exit_code == 2  # no such file: refused, as docs/scripting.md says
    gone = tmp_path / "gone.py"  # a function whose file was removed, or from `python -c`
    gone.write_text("def build(ctx):\n    return {}\n")
    func = load_function(f"{gone}:build")[0]
    gone.unlink()
    with pytest.raises(DataError, match=f"cannot find its source file to hash \\({gone};"):
        prepare(func, out)
    assert not out.exists() or not os.listdir(out)
