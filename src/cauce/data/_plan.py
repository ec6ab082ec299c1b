"""Which rows each rank reads in one epoch: a pure function of row-group sizes and settings.

The split's row groups are put in an epoch order (their stored order, or a permutation seeded
by ``(seed, epoch)``), which lays all rows on one line; rank ``r`` takes the ``r``-th of
``world_size`` contiguous, near-equal stretches of that line. Every row is in exactly one
stretch, whatever the sizes of the row groups and even with more ranks than row groups; each
rank reads whole row groups except at most two at the ends of its stretch.

``even`` makes every rank's stretch the same length, so every rank yields the same number of
batches (a DDP step per batch hangs otherwise): ``"drop"`` leaves out the last
``rows % world_size`` rows of the epoch order (other rows each epoch when shuffled), ``"pad"``
wraps around and reads that many rows a second time, as torch's ``DistributedSampler`` does.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Even = Literal["pad", "drop"] | None


@dataclass(frozen=True)
class Piece:
    """Rows ``[start, stop)`` of row group ``group`` (an index into the split's row groups)."""

    group: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def stretch(total: int, world_size: int, rank: int, even: Even) -> tuple[int, int]:
    """``(first, count)``: rank's positions on the epoch line (may pass ``total`` with pad)."""
    if even is None:
        base, extra = divmod(total, world_size)
        return rank * base + min(rank, extra), base + (1 if rank < extra else 0)
    count = total // world_size if even == "drop" else -(-total // world_size)
    return rank * count, count


def epoch_order(groups: int, *, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    if not shuffle:
        return np.arange(groups)
    return np.random.default_rng([seed, epoch]).permutation(groups)


def plan(
    group_rows: Sequence[int],
    *,
    world_size: int,
    rank: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    even: Even,
) -> list[Piece]:
    """The pieces of row groups rank ``rank`` reads in ``epoch``, in reading order."""
    total = sum(group_rows)
    order = epoch_order(len(group_rows), shuffle=shuffle, seed=seed, epoch=epoch)
    ends = list(itertools.accumulate(group_rows[g] for g in order))
    first, count = stretch(total, world_size, rank, even)
    pieces: list[Piece] = []
    while count > 0 and total > 0:
        first %= total
        take = min(count, total - first)
        pieces.extend(_cut(order, ends, group_rows, first, first + take))
        first, count = first + take, count - take
    return pieces


def _cut(
    order: np.ndarray, ends: list[int], group_rows: Sequence[int], lo: int, hi: int
) -> list[Piece]:
    out = []
    i = bisect.bisect_right(ends, lo)
    while lo < hi:
        group = int(order[i])
        begin = ends[i] - group_rows[group]
        stop = min(hi, ends[i])
        if stop > lo:
            out.append(Piece(group, lo - begin, stop - begin))
        lo = stop
        i += 1
    return out
