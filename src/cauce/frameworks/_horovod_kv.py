"""The HTTP key-value store that Horovod's Gloo contexts meet at.

Horovod's ``HTTPStore`` (``horovod/common/gloo/http_store.cc``) speaks plain HTTP to
``http://ADDR:PORT/<scope>/<key>``: ``PUT`` stores the request body, ``GET`` answers 200 with the
value or 404 while it is absent (the client polls until it appears), and ``DELETE`` is sent once a
rank is done with a scope. Any other status makes the client retry and then give up. This server
answers those three verbs the way ``horovodrun``'s own rendezvous server does, from one thread per
request, with the store in memory.

Thread safety: every method of :class:`HorovodKVServer` may be called from any thread.
The store is per gang attempt: call :meth:`HorovodKVServer.clear` (or start a new server) before
a restarted gang rendezvouses again, or its tasks would find the addresses of the dead ones.
"""

from __future__ import annotations

import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

__all__ = ["HorovodKVServer", "start", "stop"]

logger = logging.getLogger(__name__)

#: Seconds one request may take to arrive in full (Horovod's own server uses 3).
REQUEST_TIMEOUT = 3.0


class HorovodKVServer(ThreadingHTTPServer):
    """An in-memory ``scope -> key -> bytes`` store served over HTTP. Use :func:`start`."""

    daemon_threads = True

    def __init__(self, host: str, port: int = 0) -> None:
        if ":" in host:  # an IPv6 literal
            self.address_family = socket.AF_INET6
        super().__init__((host.strip("[]"), port), _Handler)
        self._lock = threading.Lock()
        self._store: dict[str, dict[str, bytes]] = {}
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def put(self, scope: str, key: str, value: bytes) -> None:
        with self._lock:
            self._store.setdefault(scope, {})[key] = value

    def get(self, scope: str, key: str) -> bytes | None:
        with self._lock:
            return self._store.get(scope, {}).get(key)

    def delete(self, scope: str, key: str) -> None:
        with self._lock:
            values = self._store.get(scope)
            if values is None:
                return
            values.pop(key, None)
            if not values:
                del self._store[scope]

    def clear(self) -> None:
        """Forget every key: call it between two attempts of a gang."""
        with self._lock:
            self._store.clear()

    def keys(self) -> dict[str, list[str]]:
        """A snapshot of the scopes and their keys, for tests and diagnostics."""
        with self._lock:
            return {scope: sorted(values) for scope, values in self._store.items()}

    def start_serving(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the Horovod key-value server is already serving")
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"horovod-kv-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self.shutdown()
            thread.join()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    timeout = REQUEST_TIMEOUT
    server_version = "cauce-horovod-kv"

    def _split(self) -> tuple[str, str] | None:
        """``/scope/key`` -> (scope, key); the key may itself contain '/'."""
        parts = self.path.lstrip("/").split("/", 1)
        if len(parts) != 2 or not parts[0] or not parts[1]:
            self._reply(HTTPStatus.BAD_REQUEST)
            return None
        return parts[0], parts[1]

    def _reply(self, status: HTTPStatus, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    @property
    def _kv(self) -> HorovodKVServer:
        return cast(HorovodKVServer, self.server)

    def do_GET(self) -> None:
        where = self._split()
        if where is None:
            return
        value = self._kv.get(*where)
        if value is None:
            self._reply(HTTPStatus.NOT_FOUND)
        else:
            self._reply(HTTPStatus.OK, value)

    def do_PUT(self) -> None:
        where = self._split()
        if where is None:
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self._reply(HTTPStatus.BAD_REQUEST)
            return
        try:
            value = self.rfile.read(length)
        except TimeoutError:
            self._reply(HTTPStatus.REQUEST_TIMEOUT)
            return
        if len(value) != length:
            self._reply(HTTPStatus.BAD_REQUEST)
            return
        self._kv.put(*where, value)
        self._reply(HTTPStatus.OK)

    def do_DELETE(self) -> None:
        where = self._split()
        if where is None:
            return
        self._kv.delete(*where)
        self._reply(HTTPStatus.OK)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("horovod kv %s: %s", self.address_string(), format % args)


def start(host: str = "127.0.0.1", port: int = 0) -> tuple[HorovodKVServer, int]:
    """Start a store on ``host`` (a free port unless ``port`` is given); returns it and its port.

    The gang's tasks reach it at ``host:port``: put that in ``GangLayout.rendezvous``.
    """
    server = HorovodKVServer(host, port)
    server.start_serving()
    logger.debug("horovod key-value store listening on %s:%d", host, server.port)
    return server, server.port


def stop(server: HorovodKVServer) -> None:
    """Stop a store started by :func:`start`."""
    server.stop()
