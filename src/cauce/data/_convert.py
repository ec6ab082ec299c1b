"""Arrow columns to NumPy arrays (zero-copy where Arrow allows) and NumPy to PyTorch tensors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cauce.data.api import DataError

Batch = dict[str, np.ndarray]
Format = Literal["numpy", "torch"]


class Converter:
    """Turns record batches into ``{column: ndarray}``.

    Categorical columns with a vocabulary become int64 codes: ``i + 1`` for ``vocab[i]``, ``0``
    for null or a value not in the vocabulary (so codes index an embedding of ``len(vocab)+1``).
    Primitive columns without nulls are views of Arrow's memory; floats with nulls get NaN;
    other columns with nulls (integers, booleans) are an error: their dtype would not hold.
    """

    def __init__(self, schema: pa.Schema, vocabularies: Mapping[str, pa.Array]) -> None:
        self._vocab = dict(vocabularies)
        self._names = schema.names

    def __call__(self, batch: pa.RecordBatch, where: str) -> Batch:
        out: Batch = {}
        for name, column in zip(self._names, batch.columns, strict=True):
            vocab = self._vocab.get(name)
            if vocab is not None:
                out[name] = _codes(column, vocab)
            elif pa.types.is_dictionary(column.type):
                out[name] = column.dictionary_decode().to_numpy(zero_copy_only=False)
            else:
                if column.null_count and not pa.types.is_floating(column.type):
                    # NumPy has no null: ints would turn into floats, bools into objects, and
                    # a column's dtype would change from one batch to the next.
                    raise DataError(
                        f"{where}: column {name!r} ({column.type}) has nulls; fill them or cast "
                        "the column to float (nulls become NaN) in prepare",
                        path=where,
                    )
                out[name] = column.to_numpy(zero_copy_only=False)
        return out


def _codes(column: pa.Array, vocab: pa.Array) -> np.ndarray:
    if pa.types.is_dictionary(column.type):
        # Map the (small) dictionary once, then gather by index: no per-row hashing.
        mapped = _map(column.dictionary, vocab)
        indices = column.indices
        if indices.null_count:
            mapped = np.append(mapped, 0)
            indices = pc.fill_null(indices, len(mapped) - 1)
        result: np.ndarray = mapped[indices.to_numpy()]
        return result
    return _map(column, vocab)


def _map(values: pa.Array, vocab: pa.Array) -> np.ndarray:
    if not values.type.equals(vocab.type):
        values = values.cast(vocab.type)
    index = pc.index_in(values, value_set=vocab)
    codes: np.ndarray = pc.fill_null(pc.add(index, 1), 0).cast(pa.int64()).to_numpy()
    return codes


def check_torch_types(schema: pa.Schema, coded: set[str]) -> None:
    """Fail before reading when a column has no PyTorch dtype."""
    for field in schema:
        t = field.type
        if field.name in coded or pa.types.is_integer(t) or pa.types.is_floating(t):
            continue
        if pa.types.is_boolean(t):
            continue
        hint = (
            "declare it categorical in prepare (ctx.categorical) to get integer codes"
            if pa.types.is_string(t) or pa.types.is_dictionary(t)
            else "cast it to a number in prepare"
        )
        raise DataError(
            f"column {field.name!r} is {t}, which has no PyTorch dtype: leave it out with "
            f"columns=[...] or {hint}"
        )


def to_torch(batch: Batch) -> dict[str, Any]:
    """Tensors that share memory with the arrays: no copy.

    Arrays that view Arrow's read-only buffers go through DLPack, which PyTorch accepts without
    the warning ``from_numpy`` gives for read-only arrays; the memory belongs to this batch
    alone, so writing to the tensors does no harm to other batches.
    """
    import torch
    from torch.utils.dlpack import from_dlpack

    out: dict[str, Any] = {}
    for name, array in batch.items():
        if array.flags.writeable or array.dtype == np.bool_:
            out[name] = torch.from_numpy(array if array.flags.writeable else array.copy())
        else:
            out[name] = from_dlpack(array)
    return out
