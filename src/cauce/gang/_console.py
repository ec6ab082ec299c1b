"""Where a driver tells people what happens: the protocol and the plain print console."""

from __future__ import annotations

import sys
from typing import Protocol

from cauce._console import Console as Lines

__all__ = ["Console", "PrintConsole"]


class Console(Protocol):
    """Where a driver tells people what happens. Must be thread-safe."""

    def status(self, text: str) -> None: ...

    def output(self, task_id: str, line: str) -> None: ...


class PrintConsole:
    """Task lines to stdout as ``[worker-0] ...``; cauce's own lines to stderr as ``cauce: ...``
    (lines of the shared :class:`cauce._console.Console`)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._err = Lines(sys.stderr, live=False)
        self._out = Lines(sys.stdout, live=False)

    def status(self, text: str) -> None:
        self._err.line(f"cauce: {text}")

    def output(self, task_id: str, line: str) -> None:
        if not self.quiet:
            self._out.line(f"[{task_id}] {line}")
