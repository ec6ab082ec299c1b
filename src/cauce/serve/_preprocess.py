"""Raw feature records to input tensors, as the model was trained.

A categorical value gets its code (position in the vocabulary + 1); null, NaN and any value
not in the vocabulary get 0. A numeric value that is null or NaN becomes the feature's fill
value; then every numeric value is scaled as ``(x - mean) / std``. A record that lacks a
feature, or holds a value of the wrong kind (a list where a number belongs), raises
:class:`~cauce.serve.api.FeatureError` naming the feature and the record (every feature the
record lacks, when it lacks several). Fields that are not features are ignored; ``records``
collects their names for the caller to report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from cauce.serve.api import FeatureError, InvalidInput, Preprocessing

__all__ = ["Preprocessor"]


def _kind(value: object) -> str:
    return "a boolean" if isinstance(value, bool) else f"a {type(value).__name__}"


class Preprocessor:
    """Turns records (``list[dict]``) or columns into the model's input arrays. Thread-safe."""

    def __init__(self, pre: Preprocessing) -> None:
        self.pre = pre
        self._lookups = [
            (f.name, {v: i + 1 for i, v in enumerate(f.vocabulary)}) for f in pre.categorical
        ]
        self._numeric = [(f.name, f.fill_value) for f in pre.numeric]
        self._mean = np.array([f.mean for f in pre.numeric], dtype=np.float64)
        self._std = np.array([f.std for f in pre.numeric], dtype=np.float64)
        self._fill = np.array([f.fill_value for f in pre.numeric], dtype=np.float64)
        self._known = frozenset(pre.features)
        #: Largest valid code of each categorical column (the vocabulary's length).
        self.max_codes = np.array([len(f.vocabulary) for f in pre.categorical], dtype=np.int64)

    def records(self, body: object, unknown: set[str] | None = None) -> dict[str, npt.NDArray[Any]]:
        """Records as a list of objects, or ``{"records": [...]}``; the names of fields that
        are not features go into ``unknown`` (they are ignored)."""
        if isinstance(body, dict) and set(body) == {"records"}:
            body = body["records"]
        if not isinstance(body, list):
            raise InvalidInput(
                'expected a JSON list of records or {"records": [...]}, '
                f"got {_kind(body)}".replace("a dict", "an object with other keys")
            )
        if not body:
            raise InvalidInput("no records to score: the list is empty")
        n = len(body)
        codes = np.zeros((n, len(self._lookups)), dtype=np.int64)
        raw = np.empty((n, len(self._numeric)), dtype=np.float64)
        for i, record in enumerate(body):
            if not isinstance(record, dict):
                raise InvalidInput(f"record {i} must be an object, got {_kind(record)}")
            if len(record) != len(self._known) or not self._known.issuperset(record):
                self._check_fields(record, i, unknown)
            for j, (name, lookup) in enumerate(self._lookups):
                codes[i, j] = self._code(lookup, record[name], name, i)
            for j, (name, fill) in enumerate(self._numeric):
                raw[i, j] = self._number(record[name], fill, name, i)
        out = self.assemble(codes, raw)
        if self._numeric:
            bad = np.argwhere(~np.isfinite(out[self.pre.numeric_input]))
            if len(bad):
                i, j = (int(k) for k in bad[0])
                raise FeatureError(
                    self._numeric[j][0], i, f"is {raw[i, j]!r}: out of range for FP32 once scaled"
                )
        return out

    def _check_fields(self, record: dict[str, Any], i: int, unknown: set[str] | None) -> None:
        missing = [name for name in self.pre.features if name not in record]
        if len(missing) == 1:
            raise FeatureError(missing[0], i, "is missing")
        if missing:
            names = ", ".join(map(repr, missing))
            raise FeatureError(
                missing[0], i, "", message=f"record {i}: features {names} are missing"
            )
        if unknown is not None:
            unknown.update(name for name in record if name not in self._known)

    def columns(self, cols: Mapping[str, Sequence[Any] | npt.NDArray[Any]]) -> dict[str, Any]:
        """Columns of equal length (lists, NumPy or pandas), one per feature."""
        missing = [name for name in self.pre.features if name not in cols]
        if missing:
            raise FeatureError(missing[0], 0, "is missing (no such column)")
        n = len(cols[self.pre.features[0]])
        codes = np.zeros((n, len(self._lookups)), dtype=np.int64)
        raw = np.empty((n, len(self._numeric)), dtype=np.float64)
        for j, (name, lookup) in enumerate(self._lookups):
            values = list(cols[name])
            try:
                codes[:, j] = [lookup.get(v, 0) if v is not None else 0 for v in values]
            except TypeError:
                for i, v in enumerate(values):
                    self._code(lookup, v, name, i)
                raise
        for j, (name, fill) in enumerate(self._numeric):
            col = cols[name]
            try:
                raw[:, j] = np.asarray(col, dtype=np.float64)
            except (TypeError, ValueError):
                for i, v in enumerate(col):
                    raw[i, j] = self._number(v, fill, name, i)
        return self.assemble(codes, raw)

    def assemble(
        self, codes: npt.NDArray[np.int64], raw: npt.NDArray[np.float64]
    ) -> dict[str, npt.NDArray[Any]]:
        """Codes and raw numbers (NaN for missing) to the model's named inputs."""
        out: dict[str, npt.NDArray[Any]] = {}
        if self._lookups:
            out[self.pre.categorical_input] = codes
        if self._numeric:
            raw = np.where(np.isnan(raw), self._fill, raw)
            out[self.pre.numeric_input] = ((raw - self._mean) / self._std).astype(np.float32)
        return out

    @staticmethod
    def _code(lookup: Mapping[Any, int], value: object, name: str, i: int) -> int:
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise FeatureError(name, i, f"must be a string, a number or null, got {_kind(value)}")
        code = lookup.get(value, 0)
        if code == 0 and isinstance(value, int):
            code = lookup.get(str(value), 0)  # a flight number sent as a number
        return code

    @staticmethod
    def _number(value: object, fill: float, name: str, i: int) -> float:
        if value is None:
            return fill
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FeatureError(name, i, f"must be a number or null, got {_kind(value)}")
        try:
            x = float(value)
        except OverflowError:
            raise FeatureError(name, i, "is too large for a float") from None
        return fill if math.isnan(x) else x
