"""The sharding plan as a pure function: which rows each rank reads per epoch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cauce.data._plan import Piece, plan, stretch

GROUPS = [100, 7, 250, 1, 300, 33, 9, 150, 50, 60, 40]  # 1,000 rows, 11 uneven row groups


def rows_of(pieces: list[Piece], groups: list[int]) -> np.ndarray:
    starts = np.concatenate([[0], np.cumsum(groups)[:-1]])
    return np.concatenate(
        [np.arange(starts[p.group] + p.start, starts[p.group] + p.stop) for p in pieces]
    )


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_row_once_per_epoch(world_size: int, shuffle: bool) -> None:
    for epoch in range(3):
        parts = [
            rows_of(
                plan(
                    GROUPS,
                    world_size=world_size,
                    rank=r,
                    shuffle=shuffle,
                    seed=7,
                    epoch=epoch,
                    even=None,
                ),
                GROUPS,
            )
            for r in range(world_size)
        ]
        everything = np.concatenate(parts)
        assert len(everything) == 1000
        assert np.array_equal(np.sort(everything), np.arange(1000))
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("world_size", [2, 3, 4, 5, 7])
def test_even_modes_give_equal_rows(world_size: int) -> None:
    total = sum(GROUPS)
    for even in ("pad", "drop"):
        parts = [
            rows_of(
                plan(
                    GROUPS, world_size=world_size, rank=r, shuffle=True, seed=1, epoch=2, even=even
                ),
                GROUPS,
            )
            for r in range(world_size)
        ]
        assert len({len(p) for p in parts}) == 1
        union = np.concatenate(parts)
        if even == "pad":  # every row at least once, the padding rows twice
            assert set(union.tolist()) == set(range(total))
            assert len(union) == -(-total // world_size) * world_size
        else:  # no row twice, the remainder left out
            assert len(set(union.tolist())) == len(union) == total // world_size * world_size


def test_more_ranks_than_row_groups_split_by_rows() -> None:
    groups = [10, 3]
    parts = [
        rows_of(
            plan(groups, world_size=5, rank=r, shuffle=False, seed=0, epoch=0, even=None), groups
        )
        for r in range(5)
    ]
    assert [len(p) for p in parts] == [3, 3, 3, 2, 2]
    assert np.array_equal(np.concatenate(parts), np.arange(13))


def test_shuffle_differs_per_epoch_and_repeats_per_seed() -> None:
    def order(seed: int, epoch: int) -> list[int]:
        return [
            p.group
            for p in plan(
                GROUPS, world_size=1, rank=0, shuffle=True, seed=seed, epoch=epoch, even=None
            )
        ]

    assert order(3, 0) == order(3, 0)
    assert order(3, 0) != order(3, 1)
    assert order(3, 0) != order(4, 0)
    assert sorted(order(3, 5)) == list(range(len(GROUPS)))


def test_each_rank_reads_at_most_two_partial_row_groups() -> None:
    for world_size, rank in itertools.product(range(1, 6), range(5)):
        if rank >= world_size:
            continue
        pieces = plan(
            GROUPS, world_size=world_size, rank=rank, shuffle=True, seed=0, epoch=0, even=None
        )
        partial = [p for p in pieces if p.rows != GROUPS[p.group]]
        assert len(partial) <= 2


def test_stretch_arithmetic() -> None:
    assert [stretch(10, 3, r, None) for r in range(3)] == [(0, 4), (4, 3), (7, 3)]
    assert [stretch(10, 3, r, "drop") for r in range(3)] == [(0, 3), (3, 3), (6, 3)]
    assert [stretch(10, 3, r, "pad") for r in range(3)] == [(0, 4), (4, 4), (8, 4)]


def test_empty_row_groups_are_skipped() -> None:
    groups = [0, 5, 0, 5, 0]
    pieces = plan(groups, world_size=2, rank=1, shuffle=False, seed=0, epoch=0, even=None)
    assert pieces == [Piece(3, 0, 5)]
