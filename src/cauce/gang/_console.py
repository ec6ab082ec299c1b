"""Where a driver tells people what happens: the protocol and the plain print console."""

from __future__ import annotations

import sys
import threading
from typing import Protocol

__all__ = ["Console", "PrintConsole"]


class Console(Protocol):
    """Where a driver tells people what happens. Must be thread-safe."""

    def status(self, text: str) -> None: ...

    def output(self, task_id: str, line: str) -> None: ...


class PrintConsole:
    """Task lines to stdout as ``[worker-0] ...``; cauce's own lines to stderr as ``cauce: ...``."""

    def __init__(self, quiet: bool = False) -> None:
        self._lock = threading.Lock()
        self.quiet = quiet

    def status(self, text: str) -> None:
        with self._lock:
            sys.stderr.write(f"cauce: {text}\n")
            sys.stderr.flush()

    def output(self, task_id: str, line: str) -> None:
        if self.quiet:
            return
        with self._lock:
            sys.stdout.write(f"[{task_id}] {line}\n")
            sys.stdout.flush()
