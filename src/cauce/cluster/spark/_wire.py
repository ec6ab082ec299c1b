"""The line protocol between a gang's barrier tasks (on executors) and the driver.

Each barrier task opens one TCP connection to a server the driver runs for the attempt; both ends
send one JSON object per line. Task to driver::

    {"hello": TOKEN, "task": "worker-0", "stage": 0}    first, once; the driver answers {"ok": ...}
    {"started": PID, "host": H, "port": P, "gpus": [...]}    the command is running
    {"o": "a line the command printed"}
    {"p": "a line of its progress file"}                  (``cauce.report``, heartbeats)
    {"exit": CODE, "runtime": SECONDS}                    the command ended (CODE < 0: a signal)
    {"ping": 1}                                           every few seconds, from the hello on

Driver to task::

    {"ok": true} | {"ok": false, "why": "..."}           the answer to hello
    {"ctl": "reason"}                                     write the control file (``ask_to_stop``)
    {"stop": GRACE}                                       SIGTERM, then SIGKILL after GRACE s
    {"ping": 1}                                           every few seconds

A closed connection means the other end is gone: the task stops its command, and the driver
counts a task that closed without an exit as lost. So does silence: each end pings the other
every :func:`ping_interval` seconds and counts the other as gone once it has heard nothing for
the link timeout (``spark.cauce.linkTimeout``), which catches a host cut off the network (no
FIN, no RST ever comes); TCP keepalive and ``TCP_USER_TIMEOUT`` (:func:`keep_alive`) bound the
same in the kernel. Standard library only: executors import it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["PING", "Acceptor", "Channel", "connect", "keep_alive", "ping_interval"]

#: The heartbeat message, both ways.
PING: dict[str, Any] = {"ping": 1}

#: Longest line accepted (a task printing a longer line has it cut to this).
MAX_LINE = 1 << 20


class Channel:
    """One end of a connection: thread-safe ``send``, ``receive`` from one thread at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._reader = sock.makefile("rb")
        self.closed = False
        #: Monotonic time of the last message received (or of the connection, before any).
        self.last_heard = time.monotonic()

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
        self.last_heard = time.monotonic()
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


class Acceptor:
    """A TCP server on a daemon thread that hands each connection to ``handle`` until closed.

    ``handle`` runs on the accepting thread: it must return promptly (answer, or start a thread
    of its own for a long conversation).
    """

    def __init__(
        self,
        bind: str,
        handle: Callable[[socket.socket], None],
        *,
        name: str,
        backlog: int = 64,
        tick: float = 0.2,
    ) -> None:
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self._server = socket.create_server((bind, 0), family=family, backlog=backlog)
        self._server.settimeout(tick)
        self.port: int = self._server.getsockname()[1]
        self._handle = handle
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self.closed.is_set():
            try:
                sock, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._handle(sock)

    def close(self) -> None:
        """Stop accepting; connections already handed over are their handlers' to close."""
        self.closed.set()
        with contextlib.suppress(OSError):
            self._server.close()
        self._thread.join(timeout=5.0)


def ping_interval(link_timeout: float) -> float:
    """Seconds between pings for a link declared gone after ``link_timeout`` s of silence."""
    return min(5.0, max(0.2, link_timeout / 4))


def keep_alive(sock: socket.socket, link_timeout: float) -> None:
    """TCP keepalive with short intervals, and ``TCP_USER_TIMEOUT`` (unacknowledged data), so
    that the kernel too gives up on a silent peer, a little after ``link_timeout``: a backstop
    for the pings, which normally notice first."""
    idle = max(1, int(link_timeout / 2))
    every = max(1, int(ping_interval(link_timeout)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", every), ("TCP_KEEPCNT", 4)):
        option = getattr(socket, name, None)  # Linux has them all; macOS some
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
    if user_timeout is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, user_timeout, int(link_timeout * 1500))


def connect(host: str, port: int, timeout: float) -> Channel:
    """Connect to the driver; raises ``OSError`` if it cannot be reached within ``timeout``."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Channel(sock)
