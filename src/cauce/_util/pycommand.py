"""Reading a task's argv as a Python command: ``python [-u] SCRIPT ARGS...`` or ``python [-u] -m
MODULE ARGS...``, the forms a warm start (``preload:`` in the job spec) can run in a process
forked from an interpreter that has already imported the job's heavy modules."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PYTHON_FORMS", "PythonCommand", "python_command"]

_INTERPRETER = re.compile(r"python(\d+(\.\d+)?)?")
#: What the error of a command of another form names.
PYTHON_FORMS = "python SCRIPT ARGS..., python -m MODULE ARGS... (with -u at most)"


@dataclass(frozen=True)
class PythonCommand:
    #: argv[0] as written (``python``, ``python3.11``, a path)
    interpreter: str
    #: ``script`` or ``module``
    kind: str
    #: the script's path, or the module's dotted name
    target: str
    args: tuple[str, ...]
    #: ``-u`` was given
    unbuffered: bool = False


def python_command(argv: Sequence[str]) -> PythonCommand | None:
    """``argv`` as a :class:`PythonCommand`, or None if it is not one of :data:`PYTHON_FORMS`."""
    if not argv or not _INTERPRETER.fullmatch(os.path.basename(argv[0])):
        return None
    rest = list(argv[1:])
    unbuffered = False
    while rest and rest[0] == "-u":
        unbuffered = True
        rest.pop(0)
    if rest[:1] == ["-m"] and len(rest) > 1 and not rest[1].startswith("-"):
        return PythonCommand(argv[0], "module", rest[1], tuple(rest[2:]), unbuffered)
    if rest and not rest[0].startswith("-"):
        return PythonCommand(argv[0], "script", rest[0], tuple(rest[1:]), unbuffered)
    return None
