"""Decoded row groups kept in memory across epochs: later epochs read no file unless over budget."""

from __future__ import annotations

import logging
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cauce.data import DataError, prepare, shard
from cauce.data._cache import CACHE

BUILD = """
import numpy as np
import pyarrow as pa


def build(ctx):
    ids = np.arange(3000)
    t = ctx.table("src", pa.table({"id": ids, "x": ids * 0.5, "cat": [f"c{i % 5}" for i in ids]}))
    ctx.categorical("cat")
    return {"train": t.order_by("id")}
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    (folder / "build_cache.py").write_text(textwrap.dedent(BUILD))
    prepare(f"{folder / 'build_cache.py'}:build", folder / "ds", row_group_rows=256)
    return folder / "ds"


@pytest.fixture
def dataset(prepared: Path, tmp_path: Path) -> Iterator[Path]:
    CACHE.clear()
    shutil.copytree(prepared, tmp_path / "ds")
    yield tmp_path / "ds"
    CACHE.clear()


def _hide(root: Path) -> list[Path]:
    """Rename every Parquet file away; returns their new names."""
    moved = []
    for path in sorted(root.rglob("*.parquet")):
        moved.append(path.rename(path.with_suffix(".hidden")))
    assert moved
    return moved


def _unhide(moved: list[Path]) -> None:
    for path in moved:
        path.rename(path.with_suffix(".parquet"))


def _epoch(root: Path, epoch: int, **kwargs: Any) -> list[dict[str, np.ndarray]]:
    return list(shard(root, "train", batch_size=100, epoch=epoch, **kwargs))


def _same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"rank": 0, "world_size": 2, "even": "pad"},  # stored order: batches are copies
        {"rank": 0, "world_size": 1, "shuffle": True, "seed": 3},  # gathers out of the buffer
    ],
)
def test_a_cached_epoch_reads_no_file(dataset: Path, settings: dict[str, Any]) -> None:
    expected = [_epoch(dataset, e, cache=False, **settings) for e in range(2)]
    first = _epoch(dataset, 0, **settings)
    assert _same(first, expected[0])
    for batch in first:  # writing to a batch must not change what the next epochs get
        batch["x"][:] = -1.0
    moved = _hide(dataset)
    # No file left: the manifest's plan, and every batch, come from memory.
    assert _same(_epoch(dataset, 1, **settings), expected[1])
    assert _same(_epoch(dataset, 0, **settings), expected[0])
    _unhide(moved)


@pytest.mark.parametrize("off", ["budget", "env"])
def test_a_split_over_budget_is_read_again(
    dataset: Path, off: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings: dict[str, Any] = {"rank": 1, "world_size": 2}
    if off == "budget":
        settings["cache"] = "16KiB"  # 1,500 rows of 3 columns decode to about 36 KiB
    else:
        monkeypatch.setenv("CAUCE_DATA_CACHE", "0")
    expected = _epoch(dataset, 1, **{**settings, "cache": False})
    with caplog.at_level(logging.INFO, logger="cauce.data._cache"):
        _epoch(dataset, 0, **settings)
        moved = _hide(dataset)
        with pytest.raises(DataError, match=r"part-00000\.parquet"):
            _epoch(dataset, 1, **settings)  # it goes back to the files, which are gone
        _unhide(moved)
        assert _same(_epoch(dataset, 1, **settings), expected)
    told = [r.getMessage() for r in caplog.records if "not kept in memory" in r.getMessage()]
    if off == "budget":
        assert len(told) == 1, "said once, not at every epoch"
        assert "over the cache's 16 KiB" in told[0] and "rank 1 of 2" in told[0]
    else:
        assert told == []  # turned off on purpose: nothing to say


def test_a_bad_cache_setting_is_named(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAUCE_DATA_CACHE", "sometimes")
    with pytest.raises(DataError, match=r"CAUCE_DATA_CACHE must be 0/off .* got 'sometimes'"):
        shard(dataset, "train")
