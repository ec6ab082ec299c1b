"""``cauce.report``'s values as TensorBoard scalars, when the job asks for them.

With ``tensorboard: {report: true}`` in the job, the driver sets ``CAUCE_TENSORBOARD_REPORT=1``
and ``CAUCE_TENSORBOARD_DIR``; each task then writes an event file under
``CAUCE_TENSORBOARD_DIR/<task id>`` (one TensorBoard run per task), through TensorBoard's own
writer, so that curves show up without a change to the script. A task where ``tensorboard`` is
not importable, or whose folder cannot be written, warns once and goes on: reports still reach
the driver.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["scalars"]

logger = logging.getLogger(__name__)


class _Scalars:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writer: Any = None
        self.folder: str | None = None
        self.failed = False

    def _open(self) -> Any:
        if os.environ.get("CAUCE_TENSORBOARD_REPORT") != "1" or self.failed:
            return None
        root = os.environ.get("CAUCE_TENSORBOARD_DIR")
        if not root:
            return None
        folder = os.path.join(root, os.environ.get("CAUCE_TASK_ID") or f"pid-{os.getpid()}")
        if self.writer is not None and folder == self.folder:
            return self.writer
        try:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            return self._fail("tensorboard is not importable here: pip install tensorboard")
        if self.writer is not None:
            self.writer.close()
        try:
            os.makedirs(folder, exist_ok=True)
            self.writer = EventFileWriter(folder, max_queue_size=100, flush_secs=1)
        except OSError as exc:
            return self._fail(f"cannot write to {folder}: {exc}")
        self.folder = folder
        atexit.register(self.close)
        return self.writer

    def _fail(self, why: str) -> None:
        self.failed = True
        logger.warning("cauce.report: no TensorBoard scalars: %s", why)

    def write(self, wall_time: float, step: int, values: Mapping[str, float]) -> None:
        with self.lock:
            writer = self._open()
            if writer is None:
                return
            from tensorboard.compat.proto.event_pb2 import Event
            from tensorboard.compat.proto.summary_pb2 import Summary

            summary = Summary(
                value=[Summary.Value(tag=tag, simple_value=v) for tag, v in values.items()]
            )
            writer.add_event(Event(wall_time=wall_time, step=step, summary=summary))

    def close(self) -> None:
        with self.lock:
            if self.writer is not None:
                self.writer.close()
                self.writer = None


_scalars = _Scalars()


def scalars(wall_time: float, step: int, values: Mapping[str, float]) -> None:
    """Write ``values`` at ``step`` as scalars, if the job asked for it; else nothing."""
    if os.environ.get("CAUCE_TENSORBOARD_REPORT") == "1":
        _scalars.write(wall_time, step, values)
