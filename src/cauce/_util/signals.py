"""Signal handlers installed for the length of a block."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any

__all__ = ["handle_signals"]


@contextlib.contextmanager
def _installed(signums: tuple[int, ...], handler: Callable[[int], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # Python delivers signals to the main thread only; elsewhere nothing to install
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        handler(signum)

    saved: dict[int, Any] = {}
    try:
        for signum in signums:
            saved[signum] = signal.signal(signum, on_signal)
        yield
    finally:
        for signum, previous in saved.items():
            signal.signal(signum, previous)


def handle_signals(
    signums: Iterable[int], handler: Callable[[int], None]
) -> contextlib.AbstractContextManager[None]:
    """Call ``handler(signum)`` on each of ``signums`` while the block runs, then restore the
    previous handlers. Only in the main thread (the only one Python delivers signals to);
    elsewhere a no-op. The handler runs between bytecodes of the main thread: keep it short and
    lock-free (set a flag, put on a ``queue.SimpleQueue``)."""
    return _installed(tuple(signums), handler)
