"""Durations, written the one way everywhere (job, tune, pipeline and ``spark.cauce.*``
settings): a number of seconds (``90``, ``2.5``) or a text of numbers with units, largest first
(``90s``, ``10m``, ``1h``, ``1h30m``, ``500ms``; ``min`` may stand for ``m``)."""

from __future__ import annotations

import math
import re

from cauce.errors import SpecError
from cauce.spec._values import number_problem, short_repr

__all__ = ["DURATION_EXAMPLES", "duration_problem", "parse_duration"]

DURATION_EXAMPLES = "90, 90s, 10m, 1h or 1h30m"
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def _seconds(text: str) -> float | None:
    """The seconds ``text`` stands for, or None when it is not a duration."""
    text = text.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    total, position, last = 0.0, 0, math.inf
    for match in _PART.finditer(text):
        if match.start() != position and text[position : match.start()].strip():
            return None
        unit = _SECONDS[match.group(2)]
        if unit >= last:  # 10m1h, 5s5s: units must come largest first, each once
            return None
        last = unit
        total += float(match.group(1)) * unit
        position = match.end()
    if position == 0 or text[position:].strip():
        return None
    return total


def duration_problem(
    value: object, *, minimum: float | None = None, above: float | None = None, maximum: float
) -> tuple[float, str]:
    """(seconds, "") for a duration within bounds, or (0, the problem)."""
    if isinstance(value, str):
        seconds = _seconds(value)
        if seconds is None:
            return 0.0, f"must be a duration like {DURATION_EXAMPLES}, got {short_repr(value)}"
        value = seconds
    elif isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0, f"must be a duration like {DURATION_EXAMPLES}, got {short_repr(value)}"
    problem = number_problem(value, minimum=minimum, above=above, maximum=maximum, unit=" seconds")
    return (0.0, problem) if problem else (float(value), "")


def parse_duration(
    value: object,
    path: str,
    source: str = "",
    *,
    minimum: float | None = None,
    above: float | None = 0.0,
    maximum: float = 1e8,
) -> float:
    """``90``, ``"90s"``, ``"10m"``, ``"1h30m"`` -> seconds; by default it must be > 0."""
    seconds, problem = duration_problem(value, minimum=minimum, above=above, maximum=maximum)
    if problem:
        raise SpecError(path, problem, value=value, source=source)
    return seconds
