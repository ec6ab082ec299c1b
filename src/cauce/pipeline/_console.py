"""What ``cauce run pipeline.yaml`` shows while it works: one line per step, and a progress bar
for the long ones (rows written, epochs, trials), on the shared :class:`cauce._console.Console`
(redrawn in place on a terminal, one line per change of the count elsewhere)."""

from __future__ import annotations

import time
from typing import IO

from cauce._console import Console

__all__ = ["PipelineConsole", "format_seconds"]

_WIDTH = 24


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


class PipelineConsole:
    """Thread-safe: job drivers and tuners call it from their threads."""

    def __init__(self, stream: IO[str] | None = None, *, live: bool | None = None) -> None:
        self.console = Console(stream, live=live, transient=True)
        self._step = ""
        self._started = time.monotonic()

    def line(self, text: str) -> None:
        self.console.line(text)

    def _step_line(self, text: str) -> None:
        self.console.end()  # the bar of the step goes
        self.console.line(text)

    def step_started(self, name: str, what: str) -> None:
        self._step = name
        self._started = time.monotonic()
        self._step_line(f"[{name}] {what}")

    def step_finished(self, name: str, how: str) -> None:
        took = format_seconds(time.monotonic() - self._started)
        self._step_line(f"[{name}] {how} ({took})")

    def step_skipped(self, name: str, why: str) -> None:
        self._step_line(f"[{name}] skipped: {why}")

    def progress(self, done: int, total: int | None, unit: str, note: str = "") -> None:
        """The current step's count: ``done`` of ``total`` (None: unknown) ``unit``s."""
        elapsed = format_seconds(time.monotonic() - self._started)
        if total:
            filled = min(_WIDTH, _WIDTH * done // total)
            count = f"[{'#' * filled}{'.' * (_WIDTH - filled)}] {done}/{total} {unit}"
        else:
            count = f"{done:,} {unit}"
        tail = f"  {note}" if note else ""
        self.console.show(f"[{self._step}] {count}{tail}  {elapsed}", key=(unit, done))

    def close(self) -> None:
        """Give the terminal back (the bar goes), also after an error."""
        self.console.close()
