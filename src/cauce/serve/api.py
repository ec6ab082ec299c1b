"""The serving layer's contract: tensor and feature specs, server settings, errors.

Nothing here imports torch: the CLI, ``cauce package`` and the JSON checks use these types
without paying for a deep-learning framework.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from cauce.errors import CauceError

__all__ = [
    "DATATYPES",
    "CategoricalFeature",
    "FeatureError",
    "InvalidInput",
    "ModelFormatError",
    "NumericFeature",
    "OutputExists",
    "Preprocessing",
    "QueueFull",
    "ServeError",
    "ServeSettings",
    "SettingsError",
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
#: Bounds of a tensor's declared shape, and of a numeric feature's mean, std and fill (an FP32
#: input: beyond them, scaling overflows float32 or loses every digit).
_MAX_DIMS = 8
_MAX_DIM = 1 << 24
_MAX_ROW = 1 << 26
_MAX_SCALE = 1e30


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

    ``feature`` names the feature (the first, when a record lacks several); ``record`` is the
    index of the record (from 0). ``message`` replaces the usual ``record R: feature F PROBLEM``.
    """

    def __init__(
        self, feature: str, record: int, problem: str, *, message: str | None = None
    ) -> None:
        self.feature = feature
        self.record = record
        super().__init__(message or f"record {record}: feature {feature!r} {problem}")


class SettingsError(ServeError):
    """A server setting is out of its range or inconsistent; nothing was started."""

    exit_code = 2


class OutputExists(ServeError):
    """``cauce predict``'s output is there already and ``--overwrite`` was not given: refused
    before anything ran (exit 2)."""

    exit_code = 2

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"--output {path} exists; choose another or add --overwrite to replace it")


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
        row = math.prod(abs(d) for d in shape[1:])
        if len(shape) > _MAX_DIMS or max(shape) > _MAX_DIM or row > _MAX_ROW:
            raise ServeError(
                f"tensor {self.name!r}: shape must have at most {_MAX_DIMS} dimensions of at "
                f"most {_MAX_DIM} each, {_MAX_ROW} values per row, got {list(shape)}"
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
        values = {"mean": self.mean, "std": self.std, "fill": self.fill_value}
        for key, value in values.items():
            if not (math.isfinite(value) and abs(value) <= _MAX_SCALE):
                raise ServeError(
                    f"numeric feature {self.name!r}: {key} must be a finite number of "
                    f"magnitude at most {_MAX_SCALE:g}, got {value!r}"
                )
        if not self.std >= 1 / _MAX_SCALE:
            raise ServeError(
                f"numeric feature {self.name!r}: std must be >= {1 / _MAX_SCALE:g}, got {self.std}"
            )

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


def _from_env(name: str, kind: type, default: Any) -> Any:
    """``$name`` parsed as ``kind``; ``default`` when it is unset or empty."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if kind is bool:
        return raw.strip().lower() not in ("0", "false", "no", "off")
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise SettingsError(f"${name} must be {what}, got {raw!r}") from None


#: Bounds of the numeric settings: (low, high). Beyond them a value is a mistake (a million
#: workers, an hour of batching delay) that would exhaust the host or hang the server.
_BOUNDS: Mapping[str, tuple[float, float]] = {
    "port": (0, 65535),
    "workers": (1, 256),
    "max_batch_size": (1, 65536),
    "max_delay_ms": (0, 10_000),
    "max_queue": (1, 1_000_000),
    "max_body_bytes": (1024, 1 << 30),
    "threads": (0, 1024),
    "grace_s": (0, 3600),
    "max_header_bytes": (1024, 1 << 20),
    "header_timeout_s": (0.1, 3600),
}


def _check_bounds(settings: object) -> None:
    for name, (low, high) in _BOUNDS.items():
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise SettingsError(f"{name} must be a finite number, got {value!r}")
        if value < low:
            raise SettingsError(f"{name} must be >= {low:g}, got {value!r}")
        if value > high:
            raise SettingsError(f"{name} must be <= {high:g}, got {value!r}")


def check_token(token: str, what: str = "the token") -> str:
    """A bearer token: 1 to 4096 visible ASCII characters (it travels in a header)."""
    if not token or len(token) > 4096 or not all(33 <= ord(c) <= 126 for c in token):
        raise SettingsError(
            f"{what} must be 1 to 4096 visible ASCII characters (no spaces), "
            f"got {len(token)} characters"
        )
    return token


@dataclass(frozen=True)
class ServeSettings:
    """What ``cauce serve`` runs with. Each field has an environment variable, ``env_name``.

    ``token``: when set, every endpoint but health, readiness and the OpenAPI document needs
    ``Authorization: Bearer TOKEN``. ``ready_file``: written (atomically) once the server
    answers requests, see :mod:`cauce.serve._ready`. ``tls_cert``/``tls_key``: PEM files, for
    HTTPS. ``max_header_bytes`` and ``header_timeout_s`` bound a request's head: larger gets
    431, slower gets the connection closed.
    """

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
    token: str = field(default="", repr=False)
    insecure: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    ready_file: str = ""
    max_header_bytes: int = 32 * 1024
    header_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _check_bounds(self)
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise SettingsError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.token:
            check_token(self.token)
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

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
        """Settings from ``CAUCE_SERVE_*`` variables (empty ones count as unset), then
        ``overrides``."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            default = "" if f.name == "model_dir" else f.default
            kind = type(default)
            values[f.name] = _from_env(cls.env_name(f.name), kind, default)
        values.update(overrides)
        return cls(**values)
