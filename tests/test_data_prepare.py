"""prepare on DuckDB: the manifest, the cache, loading functions, atomic commits, the CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cauce.data import DataError, Manifest, PrepareContext, prepare, read_manifest, shard
from cauce.data import _prepare as prepare_module
from data_fixtures import ids, write_csv, write_module

pytest.importorskip("ibis")
pytest.importorskip("duckdb")


def no_engine(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the engine was started on a cache hit")


@pytest.fixture
def target(tmp_path: Path) -> str:
    csv = write_csv(tmp_path / "in" / "src.csv", 500)
    return write_module(tmp_path / "code", csv)


def test_manifest_describes_the_output(tmp_path: Path, target: str) -> None:
    progress: list[tuple[str, int]] = []
    m = prepare(
        target,
        tmp_path / "out",
        row_group_rows=100,
        rows_per_file=250,
        progress=lambda s, n: progress.append((s, n)),
    )
    assert m.rows == {"train": 375, "test": 125}
    train = m.splits["train"]
    assert [f.rows for f in train.files] == [250, 125]
    assert [f.row_groups for f in train.files] == [(100, 100, 50), (50, 75)]
    assert m.columns == ("id", "city", "amount", "day", "big")
    assert dict(m.vocabularies) == {"city": ("Lima", "Lyon", "Oslo", "Pune")}  # "NA" is null
    assert progress[-1] == ("test", 125) and ("train", 375) in progress
    src = m.source
    assert src.engine == "duckdb" and src.function == target
    assert [(i.name, i.kind, i.rows) for i in src.inputs] == [("src", "csv", 500)]
    assert src.options == {"rows_per_file": 250, "row_group_rows": 100, "compression": "zstd"}
    assert read_manifest(tmp_path / "out") == Manifest(**{**vars(m), "root": str(tmp_path / "out")})
    raw = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert raw["splits"]["train"]["row_groups"] == 5
    got = ids(shard(tmp_path / "out", "test", batch_size=1000))
    assert np.array_equal(got, np.arange(0, 500, 4))


def test_reading_needs_a_known_split(tmp_path: Path, target: str) -> None:
    prepare(target, tmp_path / "out")
    with pytest.raises(DataError, match=r"name a split \(splits: train, test\)"):
        shard(tmp_path / "out")
    with pytest.raises(DataError, match=r"no split 'tst' \(splits: train, test\)"):
        shard(tmp_path / "out", "tst")
    with pytest.raises(DataError, match=r"split 'test': no column\(s\) 'nope'"):
        shard(tmp_path / "out", "test", columns=["nope"])


def test_unchanged_rerun_is_a_cache_hit_that_runs_nothing(
    tmp_path: Path, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = prepare(target, tmp_path / "out")
    monkeypatch.setattr(prepare_module, "make_engine", no_engine)
    again = prepare(target, tmp_path / "out")
    assert again.content_hash == first.content_hash and again.created_at == first.created_at


def test_forced_rerun_is_deterministic_and_replaces_the_version(
    tmp_path: Path, target: str
) -> None:
    first = prepare(target, tmp_path / "out")
    again = prepare(target, tmp_path / "out", force=True)
    assert again.content_hash == first.content_hash
    versions = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("v-")]
    assert versions == [again.splits["train"].files[0].path.split("/")[0]]


def test_changed_input_or_code_or_options_run_again(tmp_path: Path, target: str) -> None:
    first = prepare(target, tmp_path / "out")
    write_csv(tmp_path / "in" / "src.csv", 501)
    second = prepare(target, tmp_path / "out")
    assert second.rows["train"] + second.rows["test"] == 501
    module = Path(target.rsplit(":", 1)[0])
    module.write_text(module.read_text().replace("t.amount > 12", "t.amount > 13"))
    third = prepare(target, tmp_path / "out")
    assert third.source.code_hash != second.source.code_hash
    fourth = prepare(target, tmp_path / "out", row_group_rows=64)
    assert (
        len(
            {
                first.source.cache_key,
                second.source.cache_key,
                third.source.cache_key,
                fourth.source.cache_key,
            }
        )
        == 4
    )


def test_in_memory_inputs_are_hashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa

    data = {"v": list(range(10))}

    def build(ctx: PrepareContext) -> dict[str, Any]:
        t = ctx.table("mem", pa.table(data))
        return {"all": ctx.sql("SELECT v, v * 2 AS w FROM mem")} if t is not None else {}

    first = prepare(build, tmp_path / "out")
    assert first.rows == {"all": 10} and first.source.inputs[0].kind == "memory"
    assert prepare(build, tmp_path / "out").created_at == first.created_at
    data["v"] = list(range(11))
    assert prepare(build, tmp_path / "out").rows == {"all": 11}


def test_parquet_inputs_and_module_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "raw").mkdir()
    pq.write_table(pa.table({"k": [1, 2, 3]}), tmp_path / "raw" / "a.parquet")
    pq.write_table(pa.table({"k": [4, 5]}), tmp_path / "raw" / "b.parquet")
    pkg = tmp_path / "mods" / "prep_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "steps.py").write_text(
        textwrap.dedent(f"""
        def build(ctx):
            t = ctx.read_parquet({str(tmp_path / "raw")!r}, name="raw")
            return {{"train": t.mutate(k2=t.k * t.k).order_by("k")}}
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    m = prepare("prep_pkg.steps:build", tmp_path / "out")
    assert m.rows == {"train": 5} and m.source.inputs[0].kind == "parquet"
    assert m.vocabularies == {}
    monkeypatch.setattr(prepare_module, "make_engine", no_engine)
    assert prepare("prep_pkg.steps:build", tmp_path / "out").created_at == m.created_at


def test_function_errors(tmp_path: Path, target: str) -> None:
    with pytest.raises(DataError, match="expected MODULE:FUNCTION"):
        prepare("nocolon", tmp_path / "o")
    with pytest.raises(DataError, match="no module named 'no_such_mod'"):
        prepare("no_such_mod:build", tmp_path / "o")
    with pytest.raises(DataError, match="has no function 'nope'"):
        prepare(target.replace(":build", ":nope"), tmp_path / "o")
    with pytest.raises(DataError, match=r"missing\.py: no such file"):
        prepare(str(tmp_path / "missing.py") + ":build", tmp_path / "o")
    with pytest.raises(DataError, match="must return a non-empty dict"):
        prepare(lambda ctx: [], tmp_path / "o")
    with pytest.raises(DataError, match="unknown engine 'polars'"):
        prepare(target, tmp_path / "o", engine="polars")

    def bad_categorical(ctx: PrepareContext) -> dict[str, Any]:
        ctx.categorical("nope")
        return {"train": ctx.sql("SELECT 1 AS one")}

    with pytest.raises(DataError, match="categorical column 'nope' is not in the output"):
        prepare(bad_categorical, tmp_path / "o")
    assert not (tmp_path / "o").exists() or not any(
        p.name.startswith("v-") for p in (tmp_path / "o").iterdir()
    ), "a failed prepare left its files behind"


KILLED = """
import os, sys, time
from cauce.data import prepare

def stall(split, rows):
    open(sys.argv[3], "w").close()
    time.sleep(120)

prepare(sys.argv[1], sys.argv[2], force=True, row_group_rows=50, progress=stall)
"""


def kill_mid_write(target: str, out: Path, tmp_path: Path) -> None:
    marker = tmp_path / "writing"
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", KILLED, target, str(out), str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the prepare ended before it was killed"
            assert time.monotonic() < deadline, "the prepare never started writing"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert any(out.glob("v-*/train/*.parquet")), "the kill came before any data was written"


def test_killed_first_prepare_leaves_no_dataset(tmp_path: Path, target: str) -> None:
    kill_mid_write(target, tmp_path / "out", tmp_path)
    with pytest.raises(DataError, match="not a prepared dataset"):
        read_manifest(tmp_path / "out")
    for split in ("train", None):  # not even as plain Parquet files
        with pytest.raises(DataError, match="not a prepared dataset"):
            shard(tmp_path / "out", split)
    m = prepare(target, tmp_path / "out")  # and the next run cleans up
    assert [p.name for p in (tmp_path / "out").glob("v-*")] == [
        m.splits["train"].files[0].path[:23]
    ]


def test_killed_prepare_keeps_the_previous_dataset(tmp_path: Path, target: str) -> None:
    good = prepare(target, tmp_path / "out")
    before = ids(shard(tmp_path / "out", "train"))
    write_csv(tmp_path / "in" / "src.csv", 800)  # the next run would produce other rows
    kill_mid_write(target, tmp_path / "out", tmp_path)
    assert read_manifest(tmp_path / "out").content_hash == good.content_hash
    assert np.array_equal(ids(shard(tmp_path / "out", "train")), before)
    assert len(list((tmp_path / "out").glob("v-*"))) == 2  # the good one and the orphan


def cli(*argv: str) -> tuple[int, argparse.Namespace]:
    from cauce.cli import _prepare as cli_prepare

    parser = argparse.ArgumentParser(prog="cauce")
    cli_prepare.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args), args


def test_cli_prepare(tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, args = cli("prepare", target, "--out", str(tmp_path / "out"))
    assert code == 0 and args.engine == "duckdb"
    out, err = capsys.readouterr()
    assert "written by duckdb" in out and "train" in out and "375" in out
    assert "train: 375 rows written" in err
    code, _ = cli("prepare", target, "--out", str(tmp_path / "out"))
    assert "up to date, nothing ran" in capsys.readouterr().out


def test_cli_environment(tmp_path: Path, target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAUCE_PREPARE_OUT", str(tmp_path / "env-out"))
    monkeypatch.setenv("CAUCE_PREPARE_FORCE", "1")
    code, args = cli("prepare", target)
    assert code == 0 and args.force and (tmp_path / "env-out" / "_manifest.json").exists()


RUN = """
import sys
from cauce.data import prepare

prepare(sys.argv[1], sys.argv[2], force=True, row_group_rows=2000, rows_per_file=20000)
"""


@pytest.mark.slow
def test_killed_at_any_moment_leaves_a_whole_dataset(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "in" / "src.csv", 150_000)
    target = write_module(tmp_path / "code", csv)
    out = tmp_path / "out"
    prepare(target, out)
    killed = 0
    # A run takes about a second here, most of it imports: kill it at moments spread over it.
    for delay in np.random.default_rng(0).uniform(0.3, 1.3, size=6):
        proc = subprocess.Popen([sys.executable, "-c", RUN, target, str(out)])
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait()
        m = read_manifest(out)  # the previous dataset or the new one, whole
        for split in m.splits.values():
            for f in split.files:
                assert hashlib.sha256((out / f.path).read_bytes()).hexdigest() == f.sha256
        got = ids(shard(out, "train", batch_size=50_000))
        assert len(got) == m.rows["train"] == 112_500
    assert killed, "every run finished before its kill: the test no longer tests anything"


def test_hdfs_without_a_client_is_refused_in_one_line(
    tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """No libhdfs here (no Hadoop): the output is refused before anything runs, saying what an
    HDFS client needs; the engine never starts."""
    with pytest.raises(DataError, match=r"^hdfs://namenode:8020/data/x: no HDFS client on this"):
        prepare(target, "hdfs://namenode:8020/data/x", engine="spark", spark_master="local[1]")
    from cauce.cli.main import main

    code = main(["prepare", target, "--out", "hdfs://namenode:8020/data/x"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and err.startswith("error: hdfs://namenode:8020/data/x: no HDFS client")
    assert "HADOOP_HOME" in err and "hadoop classpath --glob" in err
