"""The line protocol between a gang's barrier tasks (on executors) and the driver.

Each barrier task opens one TCP connection to a server the driver runs for the attempt; both ends
send one JSON object per line. Task to driver::

    {"hello": TOKEN, "task": "worker-0", "stage": 0}    first, once; the driver answers {"ok": ...}
    {"started": PID, "host": H, "port": P, "gpus": [...]}    the command is running
    {"o": "a line the command printed"}
    {"p": "a line of its progress file"}                  (``cauce.report``, heartbeats)
    {"exit": CODE, "runtime": SECONDS}                    the command ended (CODE < 0: a signal)

Driver to task::

    {"ok": true} | {"ok": false, "why": "..."}           the answer to hello
    {"ctl": "reason"}                                     write the control file (``ask_to_stop``)
    {"stop": GRACE}                                       SIGTERM, then SIGKILL after GRACE s

A closed connection means the other end is gone: the task stops its command, and the driver
counts a task that closed without an exit as lost. Standard library only: executors import it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import Any

__all__ = ["Channel", "connect"]

#: Longest line accepted (a task printing a longer line has it cut to this).
MAX_LINE = 1 << 20


class Channel:
    """One end of a connection: thread-safe ``send``, ``receive`` from one thread at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._reader = sock.makefile("rb")
        self.closed = False

    def send(self, message: dict[str, Any]) -> bool:
        """Send one message; False if the connection is gone."""
        data = json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"
        with self._send_lock:
            if self.closed:
                return False
            try:
                self.sock.sendall(data)
            except OSError:
                return False
        return True

    def receive(self) -> dict[str, Any] | None:
        """The next message, or None once the connection is closed (or sends garbage)."""
        try:
            raw = self._reader.readline(MAX_LINE)
        except (OSError, ValueError):
            return None
        if not raw:
            return None
        try:
            message = json.loads(raw)
        except ValueError:
            return None
        return message if isinstance(message, dict) else None

    def close(self) -> None:
        with self._send_lock:
            if self.closed:
                return
            self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._reader.close()
        self.sock.close()


def connect(host: str, port: int, timeout: float) -> Channel:
    """Connect to the driver; raises ``OSError`` if it cannot be reached within ``timeout``."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Channel(sock)
