"""Which tuner runs a trial, as recorded in the trial's attributes, so that the next run of a
study can tell the trials of a tuner that is gone (``kill -9``) from those of one still alive."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from cauce.history import process_stamp

__all__ = ["TunerId"]


@dataclass(frozen=True)
class TunerId:
    """Which process runs a trial: host, pid and the pid's start time (pids are reused)."""

    host: str
    pid: int
    start: str | None

    @classmethod
    def mine(cls) -> TunerId:
        return cls(socket.gethostname(), os.getpid(), process_stamp(os.getpid()))

    def text(self) -> str:
        return f"{self.host}:{self.pid}:{self.start or ''}"

    @classmethod
    def parse(cls, text: object) -> TunerId | None:
        if not isinstance(text, str) or text.count(":") < 2:
            return None
        host, pid, start = text.rsplit(":", 2)
        try:
            return cls(host, int(pid), start or None)
        except ValueError:
            return None

    def alive(self) -> bool:
        """False only when it surely is gone (on this host: no such process any more)."""
        if self.host != socket.gethostname():
            return True  # cannot tell from here; a study shared across hosts keeps its trials
        return process_stamp(self.pid) == self.start
