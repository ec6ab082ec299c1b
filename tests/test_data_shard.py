"""Reading shards of real Parquet files: coverage per epoch, shuffles, batches, formats, errors."""

from __future__ import annotations

import importlib
import logging
import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cauce.data import DataError, shard
from cauce.errors import CauceError
from data_fixtures import UNEVEN, ids, table, write_files


@pytest.fixture
def files(tmp_path: Path) -> Path:
    write_files(tmp_path / "ds")
    return tmp_path / "ds"


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_row_exactly_once_per_epoch(files: Path, world_size: int, shuffle: bool) -> None:
    orders = []
    for epoch in range(2):
        per_rank = [
            ids(
                shard(
                    files,
                    batch_size=64,
                    shuffle=shuffle,
                    seed=5,
                    epoch=epoch,
                    rank=r,
                    world_size=world_size,
                    memory_budget=4096 * 64,
                )
            )
            for r in range(world_size)
        ]
        union = np.concatenate(per_rank)
        assert len(union) == 1000, "a row was read twice or not at all"
        assert np.array_equal(np.sort(union), np.arange(1000))
        orders.append(union)
    if shuffle:
        assert not np.array_equal(orders[0], orders[1]), "the shuffle did not change per epoch"
    else:
        assert np.array_equal(orders[0], np.arange(1000))


def test_shuffle_repeats_for_a_seed_and_mixes_within_row_groups(files: Path) -> None:
    def order(seed: int, epoch: int) -> np.ndarray:
        return ids(shard(files, batch_size=100, shuffle=True, seed=seed, epoch=epoch))

    assert np.array_equal(order(1, 3), order(1, 3))
    assert not np.array_equal(order(1, 3), order(2, 3))
    first = order(1, 0)[:100]
    assert not np.all(np.diff(first) == 1), "rows within a batch are still in stored order"


@pytest.mark.parametrize("world_size", [2, 3, 4, 5])
@pytest.mark.parametrize("even", ["pad", "drop"])
def test_even_gives_every_rank_the_same_number_of_batches(
    files: Path, world_size: int, even: str
) -> None:
    counts = set()
    seen: list[int] = []
    for r in range(world_size):
        s = shard(files, batch_size=32, shuffle=True, rank=r, world_size=world_size, even=even)  # type: ignore[arg-type]
        batches = list(s)
        assert len(batches) == len(s)
        counts.add(len(batches))
        seen.extend(ids(batches).tolist())
    assert len(counts) == 1
    if even == "pad":
        assert set(seen) == set(range(1000))
    else:
        assert len(set(seen)) == len(seen)


def test_batches_sizes_and_drop_last(files: Path) -> None:
    s = shard(files, batch_size=300)
    assert [len(b["id"]) for b in s] == [300, 300, 300, 100]
    assert len(s) == 4
    s = shard(files, batch_size=300, drop_last=True, shuffle=True)
    assert [len(b["id"]) for b in s] == [300, 300, 300]
    assert len(s) == 3


def test_rank_from_environment(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    s = shard(files)
    assert (s.rank, s.world_size, s.num_rows) == (1, 4, 250)
    monkeypatch.setenv("CAUCE_RANK", "2")
    monkeypatch.setenv("CAUCE_WORLD_SIZE", "3")
    assert (shard(files).rank, shard(files).world_size) == (2, 3)
    assert shard(files, rank=0, world_size=1).world_size == 1
    monkeypatch.setenv("CAUCE_RANK", "x")
    with pytest.raises(DataError, match="must both be integers"):
        shard(files)


def test_numpy_values_and_columns(files: Path) -> None:
    batch = next(iter(shard(files, batch_size=10, columns=["id", "x", "flag", "cat"])))
    assert batch["id"].dtype == np.int64
    assert np.array_equal(batch["x"], np.arange(10) * 0.5)
    assert batch["flag"].tolist() == [i % 3 == 0 for i in range(10)]
    assert batch["cat"].tolist() == [f"c{i % 7}" for i in range(10)]
    assert set(next(iter(shard(files, columns=["x"])))) == {"x"}


def test_torch_tensors_share_memory_with_arrow(files: Path) -> None:
    torch = pytest.importorskip("torch")
    s = shard(files, batch_size=50, columns=["id", "x", "flag"], format="torch")
    batch = next(iter(s))
    assert batch["id"].dtype == torch.int64 and batch["x"].dtype == torch.float64
    assert batch["flag"].dtype == torch.bool
    assert batch["id"].tolist() == list(range(50))
    with pytest.raises(DataError, match="'cat' is string, which has no PyTorch dtype"):
        shard(files, format="torch")


def test_no_copy_for_primitive_columns(files: Path) -> None:
    batch = next(iter(shard(files, batch_size=50, columns=["x"])))
    assert not batch["x"].flags.owndata, "the batch was copied out of Arrow's buffer"


def test_more_ranks_than_row_groups_still_split_by_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_files(tmp_path / "two", [(10, 3)])
    with caplog.at_level(logging.WARNING, logger="cauce.data"):
        parts = [ids(shard(tmp_path / "two", rank=r, world_size=5)) for r in range(5)]
    assert [len(p) for p in parts] == [3, 3, 3, 2, 2]
    assert np.array_equal(np.concatenate(parts), np.arange(13))
    assert "2 row groups for 5 ranks" in caplog.text


def test_more_ranks_than_rows(tmp_path: Path) -> None:
    write_files(tmp_path / "tiny", [(3,)])
    with pytest.raises(DataError, match="3 rows for 5 ranks"):
        shard(tmp_path / "tiny", rank=0, world_size=5)
    padded = [ids(shard(tmp_path / "tiny", rank=r, world_size=5, even="pad")) for r in range(5)]
    assert [len(p) for p in padded] == [1] * 5


def test_missing_columns_name_the_dataset(files: Path) -> None:
    with pytest.raises(DataError, match=r"ds: no column\(s\) 'nope' \(columns: id, x, flag, cat\)"):
        shard(files, columns=["id", "nope"])


def test_schema_that_differs_between_files(files: Path) -> None:
    pq.write_table(
        table(5000, 10).set_column(1, "x", pa.array(["a"] * 10)), files / "part-99.parquet"
    )
    with pytest.raises(
        DataError,
        match=r"part-99.parquet: schema differs from .*part-00.parquet: "
        r"column 'x' is string, expected double",
    ):
        shard(files)


def test_empty_split(tmp_path: Path) -> None:
    write_files(tmp_path / "empty", [()])
    with pytest.raises(DataError, match=r"empty.*split is empty"):
        shard(tmp_path / "empty")


def test_corrupt_footer(files: Path) -> None:
    path = files / "part-02.parquet"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"part-02\.parquet: not a readable Parquet file"):
        shard(files)


def test_corrupt_pages(tmp_path: Path) -> None:
    write_files(tmp_path / "ds", [(200, 200)])
    path = tmp_path / "ds" / "part-00.parquet"
    data = bytearray(path.read_bytes())
    data[200:1200] = b"\x17" * 1000  # page bytes; the footer stays intact
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"part-00.parquet: row group \d is unreadable"):
        list(shard(tmp_path / "ds"))


def test_nulls_in_an_integer_column(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    pq.write_table(pa.table({"n": pa.array([1, None, 3]), "f": [0.5, None, 1.5]}),
                   tmp_path / "ds" / "a.parquet")  # fmt: skip
    batch = next(iter(shard(tmp_path / "ds", columns=["f"])))
    assert np.isnan(batch["f"][1])
    with pytest.raises(DataError, match=r"a\.parquet row group 0: column 'n' \(int64\) has nulls"):
        list(shard(tmp_path / "ds"))


def test_bad_arguments(files: Path) -> None:
    with pytest.raises(DataError, match="batch_size"):
        shard(files, batch_size=0)
    with pytest.raises(DataError, match="rank"):
        shard(files, rank=3, world_size=3)
    with pytest.raises(DataError, match="both rank and world_size"):
        shard(files, rank=0)
    with pytest.raises(DataError, match="no such file"):
        shard(files / "missing")
    with pytest.raises(DataError, match="memory_budget must be a size like 4GiB"):
        shard(files, memory_budget="lots")  # as docs/data.md says: every error a DataError
    with pytest.raises(DataError, match="cache must be a size"):
        shard(files, cache="a lot")


def test_errors_are_cauce_errors() -> None:
    assert issubclass(DataError, CauceError)


@pytest.mark.parametrize("name", ["cauce.data", "cauce.data.api"])
def test_exported_names_are_complete(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not isinstance(value, types.ModuleType)
        and str(getattr(value, "__module__", name)).startswith(name)
        and attr not in ("annotations", "TYPE_CHECKING")
    }
    assert public <= set(module.__all__), sorted(public - set(module.__all__))
    assert all(hasattr(module, attr) for attr in module.__all__)


def test_uneven_fixture_is_what_the_tests_assume() -> None:
    assert sum(map(sum, UNEVEN)) == 1000 and sum(map(len, UNEVEN)) == 11


def test_stopping_early_stops_the_prefetch_thread(files: Path) -> None:
    import gc
    import threading

    for batch in shard(files, batch_size=10, memory_budget="1GiB"):
        assert len(batch["id"]) == 10
        break
    gc.collect()
    assert not [t for t in threading.enumerate() if t.name == "cauce-shard-prefetch"]
