"""``shard``: this rank's part of a split, in batches, by row group, within a memory budget."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from cauce.data import _cache
from cauce.data._batching import Chunks, in_order, prefetched, shuffled
from cauce.data._convert import Converter, Format, check_torch_types, to_torch
from cauce.data._parquet import check_columns
from cauce.data._plan import Even, plan
from cauce.data._source import Group, Reader, SplitSource, open_source
from cauce.data.api import DataError, Manifest

log = logging.getLogger(__name__)

#: (split, world size) already warned about, so that a training loop is told once.
_WARNED: set[tuple[str, int]] = set()

# How a memory budget is spent (measured with Arrow's default allocator; see docs/data.md):
# - decoding: per column, Arrow holds a compressed and a decompressed page (about 1 MiB each),
#   a dictionary page and a read buffer, and its allocator keeps freed pages for reuse. That
#   reserve is set by the number of columns, whatever the budget.
# - pieces: row groups are decoded a few thousand rows at a time (a small share);
# - the shuffle buffer: half of what is left; the other half is headroom.
# Under a budget too small for Arrow's thread pool, decoding runs on the calling thread and the
# allocator's freed pages go back to the system every budget/8 bytes decoded.
_COLUMN_RESERVE = 8 << 20
_STREAM_BUFFER = 64 << 10
_PIECE_SHARE = 0.03
_THREADS_FROM = 256 << 20
_PREFETCH = 2  # pieces decoded ahead, on a background thread, when the budget allows


def shard(
    dataset: str | os.PathLike[str] | Manifest,
    split: str | None = None,
    *,
    batch_size: int = 1024,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    columns: Sequence[str] | None = None,
    drop_last: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    even: Even = None,
    format: Format = "numpy",
    memory_budget: int | str = "512MiB",
    cache: bool | int | str = True,
    categorical: Literal["codes", "values"] = "codes",
    storage_options: Mapping[str, Any] | None = None,
) -> Shard:
    """This rank's batches of ``split`` of a prepared dataset (or of plain Parquet files).

    Across ranks each row is read exactly once per epoch; ``even="pad"`` or ``"drop"`` gives
    every rank the same number of rows and batches, which DDP needs (see :mod:`._plan`).
    ``rank``/``world_size`` default to ``CAUCE_RANK``/``CAUCE_WORLD_SIZE``, then
    ``RANK``/``WORLD_SIZE``, then 0/1. With ``shuffle`` the row-group order and the rows within
    a bounded buffer change with ``epoch`` and repeat for the same ``seed``.

    ``cache``: keep the decoded row groups in memory for the next epochs when what this rank
    may read fits (``True``: up to half of ``memory_budget``; a size: up to that; ``False``:
    never; ``CAUCE_DATA_CACHE=0`` turns it off everywhere). See :mod:`._cache`.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    if format not in ("numpy", "torch"):
        raise DataError(f"format must be 'numpy' or 'torch', got {format!r}")
    if even not in (None, "pad", "drop"):
        raise DataError(f"even must be None, 'pad' or 'drop', got {even!r}")
    if categorical not in ("codes", "values"):
        raise DataError(f"categorical must be 'codes' or 'values', got {categorical!r}")
    if epoch < 0:
        raise DataError(f"epoch must be >= 0, got {epoch}")
    budget = _cache.size(memory_budget, "memory_budget")
    cache_bytes = _cache.budget(cache, budget)
    rank, world_size = _rank_and_world(rank, world_size)
    source = open_source(dataset, split, storage_options)
    names = list(columns) if columns is not None else source.schema.names
    check_columns(source.schema, names, source.where)
    if source.rows == 0:
        raise DataError(f"{source.where}: split is empty (0 rows)", path=source.where)
    if source.rows < world_size and even != "pad":
        raise DataError(
            f"{source.where}: {source.rows} rows for {world_size} ranks; every rank needs a row "
            "(use even='pad' to repeat rows)",
            path=source.where,
        )
    if len(source.groups) < world_size and (source.where, world_size) not in _WARNED:
        _WARNED.add((source.where, world_size))
        log.warning(
            "%s: %d row groups for %d ranks; ranks split row groups by rows",
            source.where,
            len(source.groups),
            world_size,
        )
    coded = set(source.vocabularies) & set(names) if categorical == "codes" else set()
    schema = pa.schema([source.schema.field(n) for n in names])
    if format == "torch":
        check_torch_types(schema, coded)
    return Shard(
        source,
        names,
        coded,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
        even=even,
        format=format,
        budget=budget,
        cache_bytes=cache_bytes,
    )


class Shard:
    """An iterable of batches (dicts of column name to array or tensor) with a known length.

    Iterating twice reads the same epoch again; call :func:`shard` with the next ``epoch`` for
    the next one. Not thread-safe: iterate from one thread.
    """

    def __init__(
        self,
        source: SplitSource,
        columns: list[str],
        coded: set[str],
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        epoch: int,
        drop_last: bool,
        rank: int,
        world_size: int,
        even: Even,
        format: Format,
        budget: int,
        cache_bytes: int = 0,
    ) -> None:
        self.rank, self.world_size, self.epoch = rank, world_size, epoch
        self.batch_size, self.columns, self.format = batch_size, tuple(columns), format
        self._source, self._shuffle, self._seed, self._drop_last = source, shuffle, seed, drop_last
        self._pieces = plan(
            [g.rows for g in source.groups],
            world_size=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            epoch=epoch,
            even=even,
        )
        #: Rows this rank reads this epoch.
        self.num_rows = sum(p.rows for p in self._pieces)
        vocab = {c: pa.array(source.vocabularies[c]) for c in coded}
        self._convert = Converter(pa.schema([source.schema.field(c) for c in columns]), vocab)
        self._key = (source.identity, self.columns, frozenset(coded))
        self._row_bytes = _cache.CACHE.row_bytes(self._key) or max(1, source.row_bytes(columns))
        # What this rank may read over the epochs: its row groups, or any when shuffled.
        groups = set(range(len(source.groups))) if shuffle else {p.group for p in self._pieces}
        self._keep = cache_bytes > 0 and _cache.CACHE.admit(
            self._key,
            projected=sum(source.groups[g].rows for g in groups) * self._row_bytes,
            limit=cache_bytes,
            row_bytes=self._row_bytes,
            where=f"{source.where} (rank {rank} of {world_size})",
        )
        self._piece_rows, self._buffer_rows, self._threads = spend(
            budget,
            columns=len(columns),
            row_bytes=self._row_bytes,
            batch_size=batch_size,
            rows=self.num_rows,
        )
        self._release_every = 0 if self._threads else budget // 8
        # Column chunks stream through small buffers rather than being read whole: the size of
        # row groups is the writer's choice, not this reader's.
        self._buffer_size = _STREAM_BUFFER
        self._read_dictionary = [
            c for c in coded if pa.types.is_string(source.schema.field(c).type)
        ]

    def __len__(self) -> int:
        full, rest = divmod(self.num_rows, self.batch_size)
        return full if self._drop_last or rest == 0 else full + 1

    def __repr__(self) -> str:
        return (
            f"Shard({self._source.where}, rank {self.rank}/{self.world_size}, epoch {self.epoch}, "
            f"{self.num_rows} rows, {len(self)} batches of {self.batch_size})"
        )

    def __iter__(self) -> Iterator[Any]:
        if self._keep and _cache.CACHE.has_all(self._key, {p.group for p in self._pieces}):
            chunks = self._kept()  # all in memory: no reader, no thread
        else:
            chunks = self._kept() if self._keep else self._chunks()
            if self._threads:  # a budget with room for a few more pieces in flight
                chunks = prefetched(chunks, _PREFETCH)
        if self._shuffle:
            rng = np.random.default_rng([self._seed, self.epoch, self.rank, 1])
            batches = shuffled(
                chunks,
                self.batch_size,
                drop_last=self._drop_last,
                capacity=self._buffer_rows,
                rng=rng,
            )
        else:
            batches = in_order(chunks, self.batch_size, drop_last=self._drop_last)
        if self.format == "torch":
            return (to_torch(b) for b in batches)
        return batches

    def _chunks(self) -> Chunks:
        """Decoded pieces of this rank's row groups, as NumPy columns, in plan order."""
        reader = self._reader()
        pool = pa.default_memory_pool()
        decoded = 0
        try:
            for piece in self._pieces:
                group: Group = self._source.groups[piece.group]
                where = f"{self._source.display(group.file)} row group {group.index}"
                for batch in reader.read(group, piece.start, piece.stop):
                    yield self._convert(batch, where), batch.num_rows
                    decoded += batch.num_rows * self._row_bytes
                    if self._release_every and decoded >= self._release_every:
                        # Arrow's allocator keeps freed pages for reuse; under a tight budget
                        # hand them back now and then (it costs time, so not at every batch).
                        pool.release_unused()
                        decoded = 0
        finally:
            reader.close()

    def _kept(self) -> Chunks:
        """:meth:`_chunks` through the cache: row groups decoded whole once, then cut from
        memory."""
        reader = None
        try:
            for piece in self._pieces:
                parts = _cache.CACHE.get(self._key, piece.group)
                if parts is None:
                    if reader is None:
                        reader = self._reader()
                    group = self._source.groups[piece.group]
                    where = f"{self._source.display(group.file)} row group {group.index}"
                    parts = [self._convert(b, where) for b in reader.read(group, 0, group.rows)]
                    _cache.CACHE.put(self._key, piece.group, parts)
                yield from _cache.cut(parts, piece.start, piece.stop, copy=not self._shuffle)
        finally:
            if reader is not None:
                reader.close()

    def _reader(self) -> Reader:
        return self._source.reader(
            list(self.columns),
            self._read_dictionary,
            self._piece_rows,
            buffer_size=self._buffer_size,
            threads=self._threads,
        )


def spend(
    budget: int, *, columns: int, row_bytes: int, batch_size: int, rows: int
) -> tuple[int, int, bool]:
    """``(piece_rows, shuffle_buffer_rows, decode_on_threads)`` for a memory budget."""
    reserve = columns * _COLUMN_RESERVE
    free = budget - reserve
    if free < budget // 4:
        log.warning(
            "memory_budget of %d MiB is small for %d columns: decoding them takes about %d MiB; "
            "the reader will use more than its budget",
            budget >> 20,
            columns,
            reserve >> 20,
        )
        free = budget // 4
    piece_rows = int(min(65_536, max(256, budget * _PIECE_SHARE // row_bytes)))
    buffer_rows = int(max(batch_size, min(rows, free // 2 // row_bytes)))
    # Decoding columns on Arrow's thread pool is faster, but each thread's allocator keeps
    # memory of its own: worth it only when the budget dwarfs that.
    return piece_rows, buffer_rows, budget >= _THREADS_FROM + reserve


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if (rank is None) != (world_size is None):
        raise DataError(f"give both rank and world_size or neither, got {rank=}, {world_size=}")
    if rank is None or world_size is None:
        for rank_var, world_var in (("CAUCE_RANK", "CAUCE_WORLD_SIZE"), ("RANK", "WORLD_SIZE")):
            if rank_var in os.environ or world_var in os.environ:
                try:
                    rank, world_size = int(os.environ[rank_var]), int(os.environ[world_var])
                except (KeyError, ValueError) as exc:
                    raise DataError(
                        f"{rank_var}={os.environ.get(rank_var)!r} and "
                        f"{world_var}={os.environ.get(world_var)!r} must both be integers"
                    ) from exc
                break
        else:
            rank, world_size = 0, 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return rank, world_size
