"""``cauce run JOB.yaml --param lr=0.01 --param batch=64``: one configuration of a tuned job,
run as a plain job outside any study (the trial's job, with these values in place of sampled
ones: ``{lr}`` in the command, ``CAUCE_PARAM_LR`` and ``cauce.context().params``)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

from cauce.errors import SpecError
from cauce.spec import JobSpec, ParamSpec
from cauce.tune._params import trial_spec

__all__ = ["with_params"]

Choice = str | int | float | bool


def _describe(param: ParamSpec) -> str:
    if param.type == "choice":
        return f"one of {', '.join(map(str, param.values))}"
    kind = "an integer" if param.type == "int" else "a number"
    return f"{kind} in [{param.low:g}, {param.high:g}]"


def _value(param: ParamSpec, text: str) -> Choice:
    where = f"--param {param.name}"
    if param.type == "choice":
        for value in param.values:
            if str(value) == text or (
                isinstance(value, bool) and text.lower() == str(value).lower()
            ):
                return value
        raise SpecError(where, f"must be {_describe(param)}, got {text!r}")
    try:
        number: float = int(text) if param.type == "int" else float(text)
    except ValueError:
        raise SpecError(where, f"must be {_describe(param)}, got {text!r}") from None
    assert param.low is not None and param.high is not None
    if not (math.isfinite(number) and param.low <= number <= param.high):
        raise SpecError(where, f"must be {_describe(param)}, got {text!r}")
    return number


def with_params(spec: JobSpec, pairs: Sequence[str]) -> JobSpec:
    """``spec`` (with a ``tune:`` section) as the job of one trial with the values of
    ``NAME=VALUE`` ``pairs``; every parameter of the space must be given. SpecError (exit 2)
    names a bad pair, an unknown or missing parameter, or a value outside the space."""
    if spec.tune is None:
        raise SpecError("--param", f"is for jobs with a tune: section; {spec.name} has none")
    space = {param.name: param for param in spec.tune.space}
    values: dict[str, Choice] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SpecError("--param", f"wants NAME=VALUE, got {pair!r}")
        if name not in space:
            close = difflib.get_close_matches(name, space, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(
                f"--param {name}",
                f"is not a parameter of the tune: section{hint}; its parameters: "
                f"{', '.join(space)}",
            )
        values[name] = _value(space[name], text.strip())
    missing = [name for name in space if name not in values]
    if missing:
        wanted = "; ".join(f"{n}: {_describe(space[n])}" for n in missing)
        raise SpecError("--param", f"give a value for every parameter; missing {wanted}")
    return trial_spec(spec, spec.tune, values)
