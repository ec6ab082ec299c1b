"""What cauce shows while it works (``cauce run``, ``cauce tune``, pipelines): lines that stay,
and one live view that changes (a progress bar, a table of trials).

Two renderings of the same calls. On a terminal, with ``rich`` installed (the ``tune`` extra),
the view is redrawn in place and lines print above it. Elsewhere (a log, CI, a pipe) or without
rich, every line is written as it comes and the view is written as one more line each time its
``key`` changes, so that a log shows the same milestones without carriage returns.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Hashable
from typing import IO, Any

__all__ = ["Console"]


class Console:
    """Thread-safe. ``live=None`` picks the live rendering when ``stream`` is a terminal;
    ``transient`` views vanish when they end, the others stay as last drawn."""

    def __init__(
        self, stream: IO[str] | None = None, *, live: bool | None = None, transient: bool = False
    ) -> None:
        self.stream = stream or sys.stderr
        self.transient = transient
        self._lock = threading.RLock()
        self._key: Hashable | None = None
        self._rich: Any = None
        self._view: Any = None  # the rich Live showing the view, while one does
        if self.stream.isatty() if live is None else live:
            try:
                from rich.console import Console as RichConsole
            except ImportError:
                pass  # lines only
            else:
                self._rich = RichConsole(
                    file=self.stream, markup=False, emoji=False, highlight=False
                )

    @property
    def live(self) -> bool:
        """Whether the view is redrawn in place (else: one line per change)."""
        return self._rich is not None

    def line(self, text: str) -> None:
        """A line that stays (above the view, on a terminal)."""
        with self._lock:
            if self._rich is not None:
                self._rich.print(text, soft_wrap=True)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    def show(self, view: Any, key: Hashable | None = None) -> None:
        """Show ``view``, a string or a rich renderable. As lines: ``str(view)``, unless
        ``key`` is the one shown last (so a count that did not move writes nothing)."""
        with self._lock:
            if self._rich is None:
                if key is None or key != self._key:
                    self._key = key
                    self.stream.write(f"{view}\n")
                    self.stream.flush()
                return
            if self._view is None:
                from rich.live import Live

                self._view = Live(
                    view, console=self._rich, refresh_per_second=4, transient=self.transient
                )
                self._view.start()
            else:
                self._view.update(view)

    def end(self) -> None:
        """End the view (the next ``show`` starts a new one); also to call when done."""
        with self._lock:
            self._key = None
            if self._view is not None:
                view, self._view = self._view, None
                view.stop()

    close = end
