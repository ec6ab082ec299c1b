"""The portal's HTTP server: the standard library's threading server (no framework to import,
so it is up in well under a second), one thread per connection, HTTP/1.1 with keep-alive and
chunked streaming of big logs."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cauce.history import HistoryStore, lost_after
from cauce.ui._app import Portal
from cauce.ui._auth import bind_error, check_bind
from cauce.ui._http import Request, Response
from cauce.ui._portal import remove_portal, write_portal

__all__ = ["UiServer", "serve_ui"]

log = logging.getLogger(__name__)

_MAX_BODY = 16 * 1024  # the login form is all that is ever posted


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go in two writes: no 40 ms delayed-ACK stall
    server_version = "cauce-ui"
    timeout = 60  # an idle keep-alive or a slow client gives its thread back after a minute
    portal: Portal  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.send_error(400, "bad Content-Length")
            return
        if length > _MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        req = Request.parse(self.command, self.path, dict(self.headers.items()), body)
        try:
            resp = self.portal.handle(req)
        except Exception:
            log.exception("the page %s failed", self.path)
            resp = Response(500, "text/plain", b"internal error (see the portal's log)")
        self._send(resp)

    def _send(self, resp: Response) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in resp.headers.items():
            self.send_header(key, value)
        if isinstance(resp.body, bytes):
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        self._chunks(resp.body)

    def _chunks(self, body: Iterator[bytes]) -> None:
        for block in body:
            if block:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_HEAD = do_POST = _serve


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class UiServer:
    """``cauce ui`` in a process: :meth:`start` binds and serves in a thread, :meth:`close`
    stops. ``url`` is where it answers."""

    def __init__(
        self,
        store: HistoryStore,
        home: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 8265,
        token: str | None = None,
    ) -> None:
        check_bind(host, token)
        handler = type("Handler", (_Handler,), {"portal": Portal(store, home, token, host)})
        try:
            kind = _Server6 if ":" in host else ThreadingHTTPServer
            self._httpd = kind((host, port), handler)
        except OSError as exc:
            raise bind_error(host, port, exc) from None
        self._httpd.daemon_threads = True
        bound = self._httpd.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound}"
        self._thread: threading.Thread | None = None

    def start(self) -> UiServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="cauce-ui", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:  # shutdown() waits for serve_forever, which must run
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)


def serve_ui(
    store: HistoryStore,
    home: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8265,
    token: str | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; ``ready(url)`` once it listens. While it runs,
    ``$CAUCE_HOME/ui.json`` tells the CLI where it is."""
    lost_after()  # a bad CAUCE_LOST_AFTER is said now, not as an error on every page
    server = UiServer(store, home, host=host, port=port, token=token)
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGTERM,):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
        server.start()
        write_portal(server.url, store.shown, home)  # no password in a file others may read
        if ready is not None:
            ready(server.url)
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):
                pass
    finally:
        remove_portal(home)
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
