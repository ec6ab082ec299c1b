"""The serving layer's contract: tensor and feature specs, server settings, errors.

Nothing here imports torch: the CLI, ``cauce package`` and the JSON checks use these types
without paying for a deep-learning framework.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from cauce.errors import CauceError

__all__ = [
    "DATATYPES",
    "CategoricalFeature",
    "FeatureError",
    "InvalidInput",
    "ModelFormatError",
    "NumericFeature",
    "Preprocessing",
    "QueueFull",
    "ServeError",
    "ServeSettings",
    "TensorSpec",
]

#: Open Inference Protocol datatypes that a TorchScript model can take, with their NumPy dtype.
#: ``BYTES`` (strings) is not among them: raw strings go through ``/predict`` and preprocessing.
DATATYPES: Mapping[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ServeError(CauceError):
    """A model cannot be saved, loaded, served, packaged or used for scoring."""


class ModelFormatError(ServeError):
    """A model directory or its ``cauce-model.json`` is invalid; ``path`` names the file."""

    exit_code = 2

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class InvalidInput(ServeError):
    """A request is invalid: the server answers ``status`` (4xx) with this message."""

    exit_code = 2

    def __init__(self, message: str, *, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


class FeatureError(InvalidInput):
    """A raw record lacks a feature, or holds a value of the wrong kind.

    ``feature`` names the feature; ``record`` is the index of the record (from 0).
    """

    def __init__(self, feature: str, record: int, problem: str) -> None:
        self.feature = feature
        self.record = record
        super().__init__(f"record {record}: feature {feature!r} {problem}")


class QueueFull(ServeError):
    """The server's queue is full; the client should retry after ``retry_after`` seconds."""

    def __init__(self, depth: int, retry_after: int = 1) -> None:
        self.depth = depth
        self.retry_after = retry_after
        super().__init__(f"the server is at capacity ({depth} requests queued); retry later")


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ServeError(
            f"{what} must be 1-63 letters, digits, '_', '.' or '-' starting with a letter or "
            f"digit, got {value!r}"
        )
    return value


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor, as Open Inference Protocol metadata.

    ``shape`` uses -1 for a dimension of any size; the first one is the batch dimension.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        check_name(self.name, "a tensor name")
        if self.datatype not in DATATYPES:
            raise ServeError(
                f"tensor {self.name!r}: datatype must be one of {', '.join(DATATYPES)}, "
                f"got {self.datatype!r}"
            )
        shape = tuple(self.shape)
        if not shape or shape[0] != -1 or any(d < -1 or d == 0 for d in shape):
            raise ServeError(
                f"tensor {self.name!r}: shape must start with -1 (the batch) and hold sizes "
                f">= 1 or -1, got {list(shape)}"
            )
        object.__setattr__(self, "shape", shape)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class CategoricalFeature:
    """A string (or integer) feature coded by its vocabulary.

    The i-th value of ``vocabulary`` (from 0) gets code ``i + 1``; code 0 is for null and for
    any value not in it, as in ``cauce.data`` manifests. In ``cauce-model.json`` the vocabulary
    is written with ``null`` first, so that a value's position there is its code.
    """

    name: str
    vocabulary: tuple[str | int, ...]

    def __post_init__(self) -> None:
        vocab = tuple(self.vocabulary)
        bad = [v for v in vocab if isinstance(v, bool) or not isinstance(v, str | int)]
        if bad:
            raise ServeError(
                f"categorical feature {self.name!r}: vocabulary values must be strings or "
                f"integers, got {bad[0]!r}"
            )
        if len(set(vocab)) != len(vocab):
            raise ServeError(f"categorical feature {self.name!r}: vocabulary has duplicates")
        object.__setattr__(self, "vocabulary", vocab)


@dataclass(frozen=True)
class NumericFeature:
    """A number, standardized as ``(x - mean) / std``; null or NaN becomes ``fill`` first.

    ``fill`` is in the feature's own units; ``None`` means the mean (so 0 after scaling).
    """

    name: str
    mean: float = 0.0
    std: float = 1.0
    fill: float | None = None

    def __post_init__(self) -> None:
        if not self.std > 0:
            raise ServeError(f"numeric feature {self.name!r}: std must be > 0, got {self.std}")

    @property
    def fill_value(self) -> float:
        return self.mean if self.fill is None else self.fill


@dataclass(frozen=True)
class Preprocessing:
    """How raw records become input tensors.

    Column ``j`` of the INT64 input ``categorical_input`` holds the code of ``categorical[j]``;
    column ``j`` of the FP32 input ``numeric_input`` the scaled value of ``numeric[j]``.
    """

    categorical: tuple[CategoricalFeature, ...] = ()
    numeric: tuple[NumericFeature, ...] = ()
    categorical_input: str = "categorical"
    numeric_input: str = "numeric"

    def __post_init__(self) -> None:
        object.__setattr__(self, "categorical", tuple(self.categorical))
        object.__setattr__(self, "numeric", tuple(self.numeric))
        names = [f.name for f in self.categorical] + [f.name for f in self.numeric]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ServeError(f"preprocessing: feature {dup[0]!r} is listed twice")
        if not names:
            raise ServeError("preprocessing: lists no feature")

    @property
    def features(self) -> list[str]:
        return [f.name for f in self.categorical] + [f.name for f in self.numeric]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ServeError(f"${name} must be an integer, got {raw!r}") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ServeError(f"${name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class ServeSettings:
    """What ``cauce serve`` runs with. Each field has an environment variable, ``env_name``."""

    model_dir: str
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    device: str = "cpu"
    max_batch_size: int = 64
    max_delay_ms: float = 2.0
    max_queue: int = 1024
    max_body_bytes: int = 16 * 1024 * 1024
    threads: int = 0  # torch intra-op threads per worker; 0: CPUs / workers, less one
    grace_s: float = 30.0
    access_log: bool = False

    def __post_init__(self) -> None:
        checks = [
            ("port", 0 <= self.port <= 65535, "between 0 and 65535"),
            ("workers", self.workers >= 1, ">= 1"),
            ("max_batch_size", self.max_batch_size >= 1, ">= 1"),
            ("max_delay_ms", self.max_delay_ms >= 0, ">= 0"),
            ("max_queue", self.max_queue >= 1, ">= 1"),
            ("max_body_bytes", self.max_body_bytes >= 1024, ">= 1024"),
            ("threads", self.threads >= 0, ">= 0"),
            ("grace_s", self.grace_s >= 0, ">= 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ServeError(f"{name} must be {rule}, got {getattr(self, name)!r}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ServeError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")

    @staticmethod
    def env_name(field_name: str) -> str:
        return "CAUCE_SERVE_" + field_name.upper()

    def to_env(self) -> dict[str, str]:
        """The environment that :meth:`from_env` reads back into these settings."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[self.env_name(f.name)] = str(int(value) if isinstance(value, bool) else value)
        return out

    @classmethod
    def from_env(cls, **overrides: Any) -> ServeSettings:
        """Settings from ``CAUCE_SERVE_*`` variables, then ``overrides``."""
        d = cls.__dataclass_fields__
        values: dict[str, Any] = {
            "model_dir": os.environ.get(cls.env_name("model_dir"), ""),
            "host": os.environ.get(cls.env_name("host"), d["host"].default),
            "device": os.environ.get(cls.env_name("device"), d["device"].default),
            "access_log": os.environ.get(cls.env_name("access_log"), "0") not in ("", "0"),
        }
        for name in ("port", "workers", "max_batch_size", "max_queue", "max_body_bytes"):
            values[name] = _env_int(cls.env_name(name), d[name].default)  # type: ignore[arg-type]
        values["threads"] = _env_int(cls.env_name("threads"), 0)
        for name in ("max_delay_ms", "grace_s"):
            values[name] = _env_float(cls.env_name(name), d[name].default)  # type: ignore[arg-type]
        values.update(overrides)
        return cls(**values)
