"""Checkpoint writes off the training thread: one in flight, errors kept for the caller.

``cauce.checkpoint.save(..., background=True)`` serialises the state in the calling thread (a
snapshot: the training loop may change its tensors as soon as ``save`` returns) and hands the
bytes to a writer thread, which writes them exactly as a synchronous save would (temporary
folder, fsync, rename; ``meta.json`` last in an object store). At most one write is in flight:
the next save, background or not, waits for it first. A failed write is raised by the next
``save`` or :func:`wait`, once. At exit the interpreter waits for the writer (it is not a
daemon thread), and a failure nobody collected is logged and printed.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Writer:
    """Runs one write at a time on its own thread. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._submitting = threading.Lock()  # wait-then-start, one caller at a time
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def join(self) -> None:
        """Wait for the write in flight, if any; its error, if any, stays for :meth:`wait`."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()

    def wait(self) -> None:
        """Wait for the write in flight; raise the error of a failed write (once)."""
        self.join()
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def submit(self, write: Callable[[], object], what: str) -> None:
        """Run ``write`` on the writer thread once the one before is done (see :meth:`wait`)."""

        def run() -> None:
            try:
                write()
            except BaseException as exc:  # kept for the caller's next save or wait
                with self._lock:
                    self._error = exc
                log.debug("background write of %s failed: %s", what, exc)

        thread = threading.Thread(target=run, name="cauce-checkpoint-writer", daemon=False)
        with self._submitting:
            self.wait()
            with self._lock:
                self._thread = thread
            thread.start()

    def at_exit(self) -> None:
        """The interpreter is leaving: a failure nobody collected is said, not lost."""
        try:
            self.wait()
        except BaseException as exc:  # nobody left to raise it to
            log.error("the last background checkpoint was not written: %s", exc)
            print(
                f"cauce: the last background checkpoint was not written: {exc}",
                file=sys.stderr,
                flush=True,
            )


WRITER = Writer()
atexit.register(WRITER.at_exit)
