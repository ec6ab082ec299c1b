"""``cauce serve --ready-file PATH``: how a program that starts the server learns it is ready.

Once the server answers requests (its socket listens, the model is loaded and warmed up; with
``--workers N``, at least one worker is), PATH is written atomically (a temporary file in the
same folder, flushed to disk, renamed over PATH), with one JSON object::

    {"url": "http://127.0.0.1:40123", "host": "127.0.0.1", "port": 40123, "pid": 4242}

``host`` is the address the socket is bound to, ``port`` its port (the one picked with
``--port 0``), ``pid`` the ``cauce serve`` process (the supervisor with workers), and ``url``
the two joined (``https`` with TLS, an IPv6 host in brackets). A file left at PATH by an earlier
run is removed at start, and PATH is removed when the server exits, so it exists only while the
server serves (or after a ``kill -9``). A program waits for PATH to appear or for the server to
exit, whichever comes first.

"Answers requests" is checked by asking: a thread of the server polls its own
``/v2/health/ready`` (open without a token) on a loopback address until it gets 200.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import ssl
import threading
from pathlib import Path

from cauce._util.files import atomic_write_bytes

__all__ = ["ReadyFile", "server_url"]

log = logging.getLogger(__name__)

_POLL_S = 0.05
_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def server_url(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


class ReadyFile:
    """Writes ``path`` once the server at ``host:port`` answers ``/v2/health/ready`` with 200.

    ``start()`` removes a stale file and starts the polling thread; ``close()`` stops it and
    removes the file. Not thread-safe: one owner calls both.
    """

    def __init__(self, path: str, *, scheme: str, host: str, port: int) -> None:
        self.path = Path(path)
        self._scheme = scheme
        self._host, self._port = host, port
        self._stop = threading.Event()
        self._written = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cauce-serve-ready", daemon=True)

    @property
    def written(self) -> bool:
        return self._written.is_set()

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _ready(self) -> bool:
        host = _WILDCARD.get(self._host, self._host)
        conn: http.client.HTTPConnection
        if self._scheme == "https":
            context = ssl.create_default_context()
            context.check_hostname = False  # our own server, on a loopback or bound address
            context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(host, self._port, timeout=5, context=context)
        else:
            conn = http.client.HTTPConnection(host, self._port, timeout=5)
        try:
            conn.request("GET", "/v2/health/ready")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._ready():
                doc = {
                    "url": server_url(self._scheme, self._host, self._port),
                    "host": self._host,
                    "port": self._port,
                    "pid": os.getpid(),
                }
                try:
                    atomic_write_bytes(self.path, json.dumps(doc).encode() + b"\n")
                except OSError as exc:
                    log.error("cannot write the ready file %s: %s", self.path, exc)
                    return
                self._written.set()
                log.info("ready: wrote %s", self.path)
                return
            self._stop.wait(_POLL_S)
