"""The search space of a ``tune:`` section: its parameters, each checked by type and range."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from cauce.spec._tune import PARAM_TYPES, Choice, ParamSpec
from cauce.spec._values import (
    MAX_COUNT,
    MAX_TUNE_VALUE,
    FieldParser,
    kind_of,
    short_repr,
)

__all__ = ["SpaceParser", "outside"]

_PARAM_KEYS = {
    "uniform": ("type", "low", "high", "step"),
    "loguniform": ("type", "low", "high"),
    "int": ("type", "low", "high", "step", "log"),
    "choice": ("type", "values"),
}
_PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def outside(param: ParamSpec, value: object) -> str:
    """Why ``value`` is not a value of ``param``, or ""."""
    if param.type == "choice":
        return (
            ""
            if value in param.values
            else f"must be one of {short_repr(list(param.values))}, got {short_repr(value)}"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {short_repr(value)}"
    if param.type == "int" and not isinstance(value, int):
        return f"must be an integer, got {short_repr(value)}"
    assert param.low is not None and param.high is not None
    if not param.low <= value <= param.high:
        return (
            f"must be within [{param.low:g}, {param.high:g}], the parameter's range, "
            f"got {short_repr(value)}"
        )
    return ""


class SpaceParser(FieldParser):
    """The checks of the ``tune:`` section's fields, and its ``space:``."""

    def mapping(self, value: object, path: str, example: str) -> Mapping[Any, Any]:
        if not isinstance(value, Mapping):
            raise self.error(path, f"must be a mapping like {example}, got {kind_of(value)}", value)
        return value

    def number(self, value: object, path: str, maximum: float = MAX_TUNE_VALUE) -> float:
        return self.real(value, path, minimum=-MAX_TUNE_VALUE, maximum=maximum)

    def kind(self, value: object, path: str, known: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in known:
            close = difflib.get_close_matches(str(value), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.error(
                path, f"must be one of {', '.join(known)}, got {short_repr(value)}{hint}", value
            )
        return value

    def space(self, value: object) -> tuple[ParamSpec, ...]:
        example = "{lr: {type: loguniform, low: 0.0001, high: 0.1}}"
        data = self.mapping(value, "tune.space", example)
        if not data:
            raise self.error("tune.space", f"is empty: give at least one parameter, like {example}")
        params: list[ParamSpec] = []
        env_names: dict[str, str] = {}
        for name, body in data.items():
            param = self.collect(partial(self.named_param, name, body), None)
            if param is None:
                continue
            other = env_names.get(param.env_name)
            if other is not None:
                self.refuse(
                    self.error(
                        f"tune.space.{name}",
                        f"clashes with tune.space.{other}: both become {param.env_name}; "
                        "rename one",
                    )
                )
            env_names[param.env_name] = str(name)
            params.append(param)
        return tuple(params)

    def named_param(self, name: object, body: object) -> ParamSpec:
        path = f"tune.space.{name}"
        if not isinstance(name, str) or not _PARAM_NAME_RE.match(name):
            raise self.error(
                path,
                "is not a valid parameter name: use letters, digits and '_', starting with "
                "a letter or '_' (it becomes CAUCE_PARAM_<NAME> and {name} in the command)",
                name,
            )
        return self.param(name, body, path)

    def param(self, name: str, value: object, path: str) -> ParamSpec:
        data = self.mapping(value, path, "{type: uniform, low: 0.0, high: 1.0}")
        if "type" not in data:
            raise self.error(
                f"{path}.type", f"is missing: give one of {', '.join(PARAM_TYPES)}", None
            )
        kind = self.kind(data["type"], f"{path}.type", PARAM_TYPES)
        self.check_keys(data, _PARAM_KEYS[kind], path)
        if kind == "choice":
            return ParamSpec(name=name, type=kind, values=self.choices(data.get("values"), path))
        for key in ("low", "high"):
            if key not in data:
                raise self.error(f"{path}.{key}", f"is missing: {kind} needs low and high")
        if kind == "int":
            return self.int_param(name, data, path)
        low = self.number(data["low"], f"{path}.low")
        high = self.number(data["high"], f"{path}.high")
        if kind == "loguniform" and low <= 0:
            raise self.error(f"{path}.low", f"must be > 0 for loguniform, got {low:g}", low)
        if high <= low:
            raise self.error(
                f"{path}.high", f"must be greater than low ({low:g}), got {high:g}", high
            )
        step = None
        if data.get("step") is not None:
            step = self.number(data["step"], f"{path}.step")
            if step <= 0:
                raise self.error(f"{path}.step", f"must be > 0, got {step:g}", step)
            count = (high - low) / step
            if count > MAX_COUNT:
                raise self.error(
                    f"{path}.step",
                    f"makes {count:g} steps from low to high, more than {MAX_COUNT}: use a larger "
                    "step or no step",
                    step,
                )
            if abs(count - round(count)) > 1e-9 * max(1.0, count):
                raise self.error(
                    f"{path}.step",
                    f"must divide high - low ({high - low:g}) into whole steps, got {step:g}; "
                    "adjust high or step",
                    step,
                )
        return ParamSpec(name=name, type=kind, low=low, high=high, step=step)

    def int_param(self, name: str, data: Mapping[Any, Any], path: str) -> ParamSpec:
        low = self.whole(data["low"], f"{path}.low")
        high = self.whole(data["high"], f"{path}.high")
        if high <= low:
            raise self.error(f"{path}.high", f"must be greater than low ({low}), got {high}", high)
        log = data.get("log", False)
        if not isinstance(log, bool):
            raise self.error(f"{path}.log", f"must be true or false, got {short_repr(log)}", log)
        step = self.integer(data.get("step", 1), f"{path}.step", minimum=1)
        if log and low < 1:
            raise self.error(f"{path}.low", f"must be >= 1 with log: true, got {low}", low)
        if log and step != 1:
            raise self.error(f"{path}.step", f"must be 1 with log: true, got {step}", step)
        if (high - low) % step:
            raise self.error(
                f"{path}.step",
                f"must divide high - low ({high - low}) into whole steps, got {step}; "
                "adjust high or step",
                step,
            )
        return ParamSpec(
            name=name, type="int", low=float(low), high=float(high), step=float(step), log=log
        )

    def whole(self, value: object, path: str) -> int:
        if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_TUNE_VALUE:
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_TUNE_VALUE:
            raise self.error(
                path, f"must be within +-{MAX_TUNE_VALUE:g}, got {short_repr(value)}", value
            )
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(
                path, f"must be a whole number for type int, got {short_repr(value)}", value
            )
        return value

    def choices(self, value: object, path: str) -> tuple[Choice, ...]:
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(item, str | int | float | bool) for item in value)
        ):
            raise self.error(
                f"{path}.values",
                f"must be a non-empty list of strings, numbers or booleans, got {kind_of(value)}",
                value,
            )
        seen: list[Choice] = []
        for item in value:
            for old in seen:
                if type(item) is type(old) and item == old:
                    raise self.error(f"{path}.values", f"lists {short_repr(item)} twice", value)
                if item == old:  # true == 1 == 1.0: Optuna stores the first for either
                    raise self.error(
                        f"{path}.values",
                        f"lists {short_repr(old)} and {short_repr(item)}, which are equal in "
                        "Python: Optuna would record one as the other; keep one, or quote "
                        "them as strings",
                        value,
                    )
            seen.append(item)
        return tuple(seen)
