"""Spark settings in a spec (``spark:``), from ``$CAUCE_SPARK_CONF`` and from ``--conf``."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import replace

from cauce.errors import SpecError
from cauce.spec._types import JobSpec
from cauce.spec._values import kind_of, short_repr

__all__ = ["spark_conf_pairs", "spark_settings", "with_spark_conf"]

_SPARK_KEY_RE = re.compile(r"^spark\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def spark_conf_pairs(options: Sequence[str], environ: str | None) -> dict[str, str]:
    """``$CAUCE_SPARK_CONF`` (KEY=VALUE pairs, quoted as in a shell), then ``--conf`` options,
    as checked Spark settings; later ones win."""
    try:
        from_env = shlex.split(environ or "")
    except ValueError as exc:
        raise SpecError(
            "$CAUCE_SPARK_CONF", f"cannot be split into KEY=VALUE pairs: {exc}"
        ) from None
    pairs = [("$CAUCE_SPARK_CONF", pair) for pair in from_env]
    pairs += [("--conf", pair) for pair in options]
    merged: dict[str, str] = {}
    for where, pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SpecError(
                where, f"must be KEY=VALUE, like spark.executor.memory=4g, got {short_repr(pair)}"
            )
        [(key, value)] = spark_settings({key.strip(): value}, where)
        merged[key] = value
    return merged


def with_spark_conf(spec: JobSpec, options: Sequence[str], environ: str | None) -> JobSpec:
    """The spec with ``$CAUCE_SPARK_CONF`` then ``--conf`` settings over its ``spark:``."""
    extra = spark_conf_pairs(options, environ)
    return replace(spec, spark=tuple({**dict(spec.spark), **extra}.items())) if extra else spec


def spark_settings(
    value: object, path: str = "spark", source: str = ""
) -> tuple[tuple[str, str], ...]:
    """A mapping of Spark settings (``spark.executor.memory: 4g``) -> ``(key, text)`` pairs.

    Keys must look like ``spark.*``; values are strings, numbers or booleans (``true``/``false``).
    """
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise SpecError(
            path,
            f"must be a mapping of Spark settings like {{spark.executor.memory: 4g}}, "
            f"got {kind_of(value)}",
            value=value,
            source=source,
        )
    out: list[tuple[str, str]] = []
    for key, item in value.items():
        if not isinstance(key, str) or not _SPARK_KEY_RE.match(key):
            raise SpecError(
                path,
                f"key {short_repr(key)} is not a Spark setting: keys start with 'spark.', like "
                "spark.executor.memory",
                value=key,
                source=source,
            )
        if isinstance(item, bool):
            item = "true" if item else "false"
        if not isinstance(item, str | int | float):
            raise SpecError(
                path,
                f"{key} must be a string or number, got {kind_of(item)}",
                value=item,
                source=source,
            )
        out.append((key, str(item)))
    return tuple(out)
