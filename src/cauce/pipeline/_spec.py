"""A pipeline file: named steps, in order, each of one kind, wired by ``${steps...}`` references.

Plain validation, no I/O beyond reading the file: every refusal is a :class:`SpecError` naming
the field path (``steps.train.params``), the value and the fix.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cauce._util.yamlfile import load_yaml_file, locate, short_repr
from cauce.errors import SpecError, SpecErrors
from cauce.pipeline._steps import KINDS
from cauce.spec import TrackingSpec, parse_tracking

__all__ = [
    "REF_RE",
    "PipelineSpec",
    "StepSpec",
    "is_pipeline",
    "load_pipeline",
    "parse_pipeline",
]

#: A step named like a kind (or ``train``, a ``run`` step) needs no ``kind:``.
_ALIASES = {"train": "run"}
_KEYS = ("name", "steps", "tracking")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_STEP_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_PART = r"[A-Za-z0-9_-]+"
#: ``${steps.NAME.a.b}``: group 1 the step, group 2 the dotted path after it.
REF_RE = re.compile(r"\$\{\s*steps\.(" + _PART + r")((?:\." + _PART + r")*)\s*\}")
_ANY_REF = re.compile(r"\$\{[^}]*\}?")


@dataclass(frozen=True)
class StepSpec:
    """One step: its name, kind, raw settings (references unresolved) and the earlier steps
    it reads."""

    name: str
    kind: str
    config: Mapping[str, Any]
    needs: tuple[str, ...]


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    steps: tuple[StepSpec, ...]
    #: The folder relative paths start from (the file's), absolute.
    folder: str
    source: str = ""
    #: The ``tracking:`` section (MLflow): one parent run for the steps; None when absent.
    tracking: TrackingSpec | None = None

    def step(self, name: str) -> StepSpec:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


def is_pipeline(raw: object) -> bool:
    """A pipeline file is told apart from a job file by its ``steps:``."""
    return isinstance(raw, Mapping) and "steps" in raw


def load_pipeline(path: str | os.PathLike[str]) -> PipelineSpec:
    file = Path(path)
    lines: dict[str, int] = {}
    raw = load_yaml_file(file, what="pipeline file", lines=lines)
    try:
        return parse_pipeline(raw, folder=str(file.resolve().parent), source=str(path))
    except SpecError as exc:
        raise locate(exc, lines) from None


def _suggest(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"


def _refs(value: object) -> Iterator[tuple[str, str]]:
    """Every ``${...}`` in a value, as (whole text, problem or "")."""
    if isinstance(value, str):
        for match in _ANY_REF.finditer(value):
            text = match.group(0)
            yield text, "" if REF_RE.fullmatch(text) else "bad"
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def parse_pipeline(raw: object, *, folder: str = ".", source: str = "") -> PipelineSpec:
    """Validate a pipeline; every mistake at once (:class:`SpecErrors`), step by step."""
    if not isinstance(raw, Mapping):
        raise SpecError("", "must be a mapping with name: and steps:", source=source)
    errors = [
        SpecError(key, "is not a pipeline key" + _suggest(key, _KEYS), source=source)
        for key in sorted(str(key) for key in set(raw) - set(_KEYS))
    ]
    name = raw.get("name")
    if name is None:
        errors.append(
            SpecError(
                "name",
                "is required: add name: with 1-63 letters, digits, '.', '_' or '-' (it names "
                "the pipeline's folder and its history)",
                source=source,
            )
        )
    elif not isinstance(name, str) or not _NAME_RE.match(name):
        errors.append(
            SpecError(
                "name",
                f"must be 1-63 letters, digits, '.', '_' or '-' starting with a letter or "
                f"digit, got {short_repr(name)}",
                value=name,
                source=source,
            )
        )
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, Mapping) or not steps_raw:
        errors.append(
            SpecError(
                "steps",
                "must map step names to their settings, in the order they run "
                "(e.g. prepare:, tune:, train:, evaluate:, serve:)",
                source=source,
            )
        )
        SpecErrors.raise_any(errors)
    assert isinstance(steps_raw, Mapping)
    steps: list[StepSpec] = []
    kinds: dict[str, str] = {}
    for step_name, body in steps_raw.items():
        try:
            step = _step(step_name, body, steps_raw, kinds, source)
        except SpecError as exc:
            errors.append(exc)
            guess = (
                body.get("kind", _ALIASES.get(step_name, step_name))
                if isinstance(body, Mapping)
                else None
            )
            if isinstance(step_name, str) and isinstance(guess, str) and guess in KINDS:
                kinds[step_name] = guess  # later steps may refer to it: no mistake of theirs
            continue
        kinds[step.name] = step.kind
        steps.append(step)
    tracking = None
    try:
        tracking = parse_tracking(raw["tracking"], source) if "tracking" in raw else None
    except SpecError as exc:
        errors.append(exc)
    SpecErrors.raise_any(errors)
    return PipelineSpec(str(name), tuple(steps), folder, source, tracking)


def _step(
    step_name: object,
    body: object,
    steps_raw: Mapping[Any, Any],
    kinds: Mapping[str, str],
    source: str,
) -> StepSpec:
    """One step, checked against the steps before it (``kinds``); all its mistakes at once."""
    where = f"steps.{step_name}"
    if not isinstance(step_name, str) or not _STEP_RE.match(step_name):
        raise SpecError(
            where,
            "names must be lowercase letters, digits and '_', starting with a letter",
            source=source,
        )
    if not isinstance(body, Mapping):
        raise SpecError(where, f"must be a mapping of settings, got {body!r}", source=source)
    kind = body.get("kind", _ALIASES.get(step_name, step_name))
    if not isinstance(kind, str) or kind not in KINDS:
        if "kind" in body:
            problem = f"must be one of {', '.join(KINDS)}, got {short_repr(kind)}"
        else:
            problem = (
                f"has no kind: set kind: to one of {', '.join(KINDS)} (a step named "
                f"{step_name!r} needs one)"
            )
        raise SpecError(
            f"{where}.kind" if "kind" in body else where, problem, value=kind, source=source
        )
    allowed = ("kind", *KINDS[kind].keys)
    unknown = [str(key) for key in body if key not in allowed]
    errors = [
        SpecError(
            f"{where}.{key}",
            f"is not a setting of a {kind} step" + _suggest(key, allowed),
            source=source,
        )
        for key in unknown
    ]
    # a required key that a misspelt one stands for is said once, by the "did you mean"
    misspelt = {m for key in unknown for m in difflib.get_close_matches(key, allowed, n=1)}
    errors += [
        SpecError(f"{where}.{key}", f"is required for a {kind} step", source=source)
        for key in KINDS[kind].required
        if body.get(key) in (None, "") and key not in misspelt
    ]
    needs: list[str] = []
    for text, problem in _refs(dict(body)):
        if problem:
            errors.append(
                SpecError(
                    where,
                    f"has a reference {text!r} that is not ${{steps.NAME.PATH}}, "
                    "like ${steps.prepare.outputs.dataset}",
                    source=source,
                )
            )
            continue
        match = REF_RE.fullmatch(text)
        assert match is not None
        upstream, path = match.group(1), match.group(2).lstrip(".")
        if upstream not in kinds:
            later = upstream in steps_raw
            errors.append(
                SpecError(
                    where,
                    f"refers to {text}, but "
                    + (
                        f"step {upstream!r} comes later: steps run in file order"
                        if later
                        else f"there is no step {upstream!r} (steps: {', '.join(kinds) or 'none'})"
                    ),
                    source=source,
                )
            )
            continue
        root = path.split(".", 1)[0] if path else ""
        roots = KINDS[kinds[upstream]].roots
        if root not in roots:
            errors.append(
                SpecError(
                    where,
                    f"refers to {text}, but a {kinds[upstream]} step has "
                    + ", ".join(f"${{steps.{upstream}.{r}...}}" for r in roots),
                    source=source,
                )
            )
        elif upstream not in needs:
            needs.append(upstream)
    try:
        _check_values(kind, where, body, source)
    except SpecError as exc:
        errors.append(exc)
    SpecErrors.raise_any(errors)
    return StepSpec(step_name, kind, dict(body), tuple(needs))


def _is_ref(value: object) -> bool:
    return isinstance(value, str) and REF_RE.fullmatch(value.strip()) is not None


def _check_values(kind: str, where: str, body: Mapping[str, Any], source: str) -> None:
    """Types of the settings that are not references."""

    def fail(key: str, message: str) -> None:
        raise SpecError(f"{where}.{key}", message, value=body.get(key), source=source)

    for key in ("trials", "parallel", "port"):
        value = body.get(key)
        if value is None or _is_ref(value):
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < (0 if key == "port" else 1)
        ):
            fail(key, f"must be an integer >= {0 if key == 'port' else 1}, got {value!r}")
    for key in ("env", "outputs", "compare"):
        value = body.get(key)
        if value is None or _is_ref(value):
            continue
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            fail(key, f"must be a mapping of names to values, got {value!r}")
    if "env" in body and isinstance(body["env"], Mapping):
        for name in body["env"]:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                fail("env", f"has {name!r}, not an environment variable name")
    for key in ("args", "code"):
        value = body.get(key)
        if value is None or _is_ref(value):
            continue
        if not isinstance(value, list) or not all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in value
        ):
            fail(key, f"must be a list of strings, got {value!r}")
    params = body.get("params")
    if params is not None and not _is_ref(params) and not isinstance(params, Mapping):
        fail("params", "must be a mapping or a reference like ${steps.tune.best.params}")
    progress = body.get("progress")
    if progress is not None:
        if not isinstance(progress, Mapping) or set(progress) - {"total", "metric"}:
            fail("progress", "must be {total: N, metric: NAME} (both optional)")
        else:
            total = progress.get("total")
            if total is not None and (
                isinstance(total, bool) or not isinstance(total, int) or total < 1
            ):
                fail("progress", f"total must be an integer >= 1, got {total!r}")
    engine = body.get("engine")
    if engine is not None and engine not in ("duckdb", "spark"):
        fail("engine", f"must be duckdb or spark, got {engine!r}")
    if kind == "run" and isinstance(body.get("outputs"), Mapping):
        for name, rel in body["outputs"].items():
            if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
                fail(
                    "outputs",
                    f"{name}: must be a path inside the job's run folder, like model or "
                    f"results.json, got {rel!r}",
                )
