"""Checks of single values in specs: finite, bounded numbers; text without NUL; cluster addresses.

Each check returns the problem as the end of a message (``"must be a number, got 'x'"``), or
``""``; the parsers put the field path and the file in front. Values in messages are cut short
(:func:`short_repr`): a spec may hold a megabyte in one value.

The bounds are far beyond any real job and well inside what Python, the OS and Optuna accept
(``time.sleep``, ``threading.Event.wait``, NumPy seeds), so that a typo fails here, in one line,
instead of hanging, overflowing or planning forever later.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from cauce._util.yamlfile import short_repr
from cauce.errors import SpecError, SpecErrors

__all__ = [
    "CLUSTER_PREFIXES",
    "MAX_COUNT",
    "MAX_CPUS",
    "MAX_GPUS",
    "MAX_INSTANCES",
    "MAX_MEMORY",
    "MAX_PAUSE",
    "MAX_SECONDS",
    "MAX_SEED",
    "MAX_TUNE_VALUE",
    "FieldParser",
    "cluster_problem",
    "integer_problem",
    "kind_of",
    "number_problem",
    "short_repr",
    "text_problem",
]

#: Timeouts: about three years.
MAX_SECONDS = 1e8
#: Grace periods and restart backoffs: a day.
MAX_PAUSE = 86_400.0
MAX_CPUS = 100_000.0
MAX_GPUS = 1024
#: Bytes: one exbibyte.
MAX_MEMORY = 2**60
#: Tasks of one role (a gang is placed all at once: more can never fit anywhere).
MAX_INSTANCES = 10_000
#: Any other count (trials, restarts, steps).
MAX_COUNT = 10**9
#: Sampler seeds (NumPy takes seeds below 2**32; cauce adds an offset per worker).
MAX_SEED = 2**31 - 1
#: Bounds of tuned parameters, in magnitude.
MAX_TUNE_VALUE = 1e15

#: Cluster addresses a spec may name (besides "local").
CLUSTER_PREFIXES = ("spark://", "local[", "yarn", "k8s://")

_T = TypeVar("_T")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_LOCAL_MASTER = re.compile(r"^local\[(\*|[1-9][0-9]{0,5})(,[0-9]{1,3})?\]$")


def number_problem(
    value: object,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float,
    unit: str = "",
) -> str:
    """A finite number >= ``minimum`` (or > ``above``) and <= ``maximum``, or the problem."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {short_repr(value)}"
    if isinstance(value, float) and math.isnan(value):
        return f"must be a number, got {short_repr(value)}"
    if isinstance(value, float) and math.isinf(value):
        return f"must be a finite number, got {short_repr(value)}"
    if above is not None and value <= above:
        return f"must be > {above:g}{unit}, got {short_repr(value)}"
    if minimum is not None and value < minimum:
        return f"must be >= {minimum:g}{unit}, got {short_repr(value)}"
    if value > maximum:
        return f"must be <= {maximum:g}{unit}, got {short_repr(value)}"
    return ""


def integer_problem(value: object, *, minimum: int, maximum: int = MAX_COUNT) -> str:
    """A whole number in [``minimum``, ``maximum``], or the problem."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a whole number, got {short_repr(value)}"
    if value < minimum:
        return f"must be >= {minimum}, got {short_repr(value)}"
    if value > maximum:
        return f"must be <= {maximum}, got {short_repr(value)}"
    return ""


def text_problem(value: str) -> str:
    """Text that can reach an ``exec``, an environment or a path: no NUL character."""
    if "\0" in value:
        return (
            f"must not contain a NUL character (\\0, at offset {value.index(chr(0))}), "
            f"got {short_repr(value)}"
        )
    return ""


def cluster_problem(address: str) -> str:
    """A cluster address that parses (``local``, ``spark://HOST:PORT[,HOST:PORT]``,
    ``local[N]``, ``yarn``, ``k8s://URL``), or the problem."""
    expected = (
        "must be 'local', 'spark://HOST:PORT', 'local[N]', 'yarn' or 'k8s://...', "
        f"got {short_repr(address)}"
    )
    if address in ("local", "yarn"):
        return ""
    if address.startswith("spark://"):
        for part in address[len("spark://") :].split(","):
            match = _HOST_PORT.match(part)
            if not match or not 1 <= int(match.group(2)) <= 65535:
                return (
                    f"must name the Spark master as spark://HOST:PORT (port 1-65535), "
                    f"got {short_repr(address)}"
                )
        return ""
    if address.startswith("local["):
        if _LOCAL_MASTER.match(address):
            return ""
        return f"must be local[N] (N >= 1 or *), got {short_repr(address)}"
    if address.startswith("k8s://"):
        rest = address[len("k8s://") :]
        if rest and not any(c.isspace() or c == "\0" for c in rest):
            return ""
        return f"must be k8s://https://HOST:PORT, got {short_repr(address)}"
    return expected


def kind_of(value: object) -> str:
    """``nothing``, or the type and the value cut short, for messages: ``list [1, 2]``."""
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {short_repr(value)}"


class FieldParser:
    """What every section parser of a spec shares: errors that name the file, known keys.

    A parser that ``collects`` keeps going after a mistake: :meth:`collect` runs the check of
    one field and keeps its error in ``errors``, unknown keys are kept there too, and the
    caller raises them all at the end (:meth:`raise_errors`), one line each.
    """

    def __init__(self, source: str, *, collects: bool = False) -> None:
        self.source = source
        self.collects = collects
        self.errors: list[SpecError] = []
        self._meant: set[str] = set()  # the known keys that misspelt keys stand for

    def error(self, path: str, message: str, value: object = None) -> SpecError:
        return SpecError(path, message, value=value, source=self.source)

    def collect(self, check: Callable[[], _T], default: _T) -> _T:
        """``check()``; or, if it refuses, ``default`` and its error kept for the end (raised
        at once by a parser that does not collect)."""
        try:
            return check()
        except SpecError as exc:
            if not self.collects:
                raise
            self.errors.append(exc)
            return default

    def refuse(self, error: SpecError) -> None:
        """Keep ``error`` for the end (or raise it, in a parser that does not collect)."""
        if not self.collects:
            raise error
        self.errors.append(error)

    def raise_errors(self) -> None:
        """Raise what :meth:`collect` kept, all at once; nothing if it kept nothing. A key
        reported as misspelt is not reported as missing too."""
        SpecErrors.raise_any(
            [
                error
                for error in self.errors
                if not (error.path in self._meant and error.message.startswith("is missing"))
            ]
        )

    def misspelt(self, path: str) -> bool:
        """True if a misspelt key was reported as standing for ``path``."""
        return path in self._meant

    def check_keys(
        self,
        data: Mapping[Any, Any],
        known: Sequence[str],
        path: str,
        *,
        under: Mapping[str, str] | None = None,
    ) -> None:
        """Refuse every unknown key by name, each with the closest known one, or with the
        section it belongs under (``under``: key -> section) when it is that section's key."""
        found = []
        for key in data:
            if key not in known:
                where = f"{path}.{key}" if path else str(key)
                home = (under or {}).get(str(key))
                if home is not None:
                    found.append(self.error(where, f"belongs under {home}: ({home}.{key})"))
                    continue
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                if close and close[0] not in data:
                    self._meant.add(f"{path}.{close[0]}" if path else close[0])
                found.append(
                    self.error(
                        where, f"is not a known field; {hint}known fields: {', '.join(known)}"
                    )
                )
        if self.collects:
            self.errors.extend(found)  # an unknown key is left out; the rest is still checked
        else:
            SpecErrors.raise_any(found)

    def real(self, value: object, path: str, **bounds: Any) -> float:
        """A finite number within ``bounds`` (those of :func:`number_problem`)."""
        problem = number_problem(value, **bounds)
        if problem:
            raise self.error(path, problem, value)
        return float(value)  # type: ignore[arg-type]

    def duration(
        self,
        value: object,
        path: str,
        *,
        minimum: float | None = None,
        above: float | None = None,
        maximum: float = MAX_SECONDS,
    ) -> float:
        """Seconds, from a number or a text like ``90s``, ``10m``, ``1h30m``."""
        from cauce.spec._duration import duration_problem

        seconds, problem = duration_problem(value, minimum=minimum, above=above, maximum=maximum)
        if problem:
            raise self.error(path, problem, value)
        return seconds

    def integer(self, value: object, path: str, *, minimum: int, maximum: int = MAX_COUNT) -> int:
        problem = integer_problem(value, minimum=minimum, maximum=maximum)
        if problem:
            raise self.error(path, problem, value)
        return value  # type: ignore[return-value]
