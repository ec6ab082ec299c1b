"""``${steps.NAME.PATH}`` references: replaced by what earlier steps produced."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cauce.errors import CauceError
from cauce.pipeline._spec import REF_RE

__all__ = ["lookup", "resolve"]


def lookup(results: Mapping[str, Mapping[str, Any]], step: str, path: str, where: str) -> Any:
    """The value at ``path`` (dotted) in the result of ``step``."""
    value: Any = results[step]
    walked = f"steps.{step}"
    for part in path.split(".") if path else []:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            have = ", ".join(sorted(value)) if isinstance(value, Mapping) else type(value).__name__
            raise CauceError(
                f"{where}: ${{{walked}.{part}}} does not exist: {walked} has {have or 'nothing'}"
            )
        walked += f".{part}"
    return value


def resolve(value: Any, results: Mapping[str, Mapping[str, Any]], where: str) -> Any:
    """``value`` with every reference replaced. A string that is one reference becomes the
    value itself (a number, a mapping...); a reference inside a longer string is formatted in
    (mappings and lists as JSON)."""
    if isinstance(value, str):
        whole = REF_RE.fullmatch(value.strip())
        if whole:
            return lookup(results, whole.group(1), whole.group(2).lstrip("."), where)

        def text(match: Any) -> str:
            found = lookup(results, match.group(1), match.group(2).lstrip("."), where)
            return found if isinstance(found, str) else json.dumps(found)

        return REF_RE.sub(text, value)
    if isinstance(value, Mapping):
        return {k: resolve(v, results, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, results, where) for v in value]
    return value
