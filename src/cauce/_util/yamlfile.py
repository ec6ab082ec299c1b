"""YAML spec files, read the one way: every failure is a :class:`SpecError` naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cauce.errors import SpecError

__all__ = ["load_yaml_file", "load_yaml_text"]


def load_yaml_file(path: Path, *, what: str) -> Any:
    """Read and parse ``path``; ``what`` names it in messages (``"job file"``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("", f"{what} {str(path)!r} does not exist") from None
    except OSError as exc:
        raise SpecError("", f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    return load_yaml_text(text, source=str(path))


def load_yaml_text(text: str, *, source: str) -> Any:
    """Parse ``text``; ``source`` (the file) starts every message."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError("", f"is not valid YAML{where}: {problem}", source=source) from None
