"""What ``cauce run pipeline.yaml`` shows while it works: one line per step, a progress bar
for the long ones (rows written, epochs, trials), and plain lines when not on a terminal.

On a terminal the bar is redrawn in place; elsewhere (a log, CI, a pipe) each change of the
count is one line, so that a log shows the same milestones without carriage returns.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO

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
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._lock = threading.Lock()
        self._bar_shown = False
        self._last_plain: tuple[str, int] | None = None
        self._step = ""
        self._started = time.monotonic()

    # --- lines ---------------------------------------------------------------------------------

    def _write_line(self, text: str) -> None:
        if self._bar_shown:
            self.stream.write("\r\x1b[K")
            self._bar_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def line(self, text: str) -> None:
        with self._lock:
            self._write_line(text)

    def step_started(self, name: str, what: str) -> None:
        with self._lock:
            self._step = name
            self._started = time.monotonic()
            self._last_plain = None
            self._write_line(f"[{name}] {what}")

    def step_finished(self, name: str, how: str) -> None:
        took = format_seconds(time.monotonic() - self._started)
        with self._lock:
            self._write_line(f"[{name}] {how} ({took})")

    def step_skipped(self, name: str, why: str) -> None:
        with self._lock:
            self._write_line(f"[{name}] skipped: {why}")

    # --- the bar -------------------------------------------------------------------------------

    def progress(self, done: int, total: int | None, unit: str, note: str = "") -> None:
        """The current step's count: ``done`` of ``total`` (None: unknown) ``unit``s."""
        with self._lock:
            elapsed = format_seconds(time.monotonic() - self._started)
            if total:
                filled = min(_WIDTH, _WIDTH * done // total)
                bar = "#" * filled + "." * (_WIDTH - filled)
                count = f"[{bar}] {done}/{total} {unit}"
            else:
                count = f"{done:,} {unit}"
            tail = f"  {note}" if note else ""
            if self.live:
                self.stream.write(f"\r\x1b[K[{self._step}] {count}{tail}  {elapsed}")
                self.stream.flush()
                self._bar_shown = True
            elif self._last_plain != (unit, done):
                self._last_plain = (unit, done)
                self.stream.write(f"[{self._step}] {count}{tail}  {elapsed}\n")
                self.stream.flush()
