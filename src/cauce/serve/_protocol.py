"""uvicorn's httptools protocol with bounds on a request's head (request line and headers).

uvicorn bounds neither how long a client may take to send its headers (it arms its keep-alive
timer only after a response, and nothing before the first request) nor, with httptools, how
large they may be: a client that opens connections and trickles header bytes holds them and
their memory forever. Here each connection gets a deadline from its first byte (and from its
opening, for a client that sends nothing) until the end of the request's head; past it the
connection is closed. A head over the byte limit gets ``431 Request Header Fields Too Large``
and the connection is closed.

The limits come from :class:`ServeConfig`, a ``uvicorn.Config`` that carries them to each
worker process (uvicorn pickles the config for the workers it spawns).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["PROTOCOL", "LimitedHttpToolsProtocol", "ServeConfig"]

#: What ``uvicorn.Config(http=...)`` imports.
PROTOCOL = "cauce.serve._protocol:LimitedHttpToolsProtocol"


class ServeConfig(uvicorn.Config):
    """A ``uvicorn.Config`` with the head limits of :class:`LimitedHttpToolsProtocol`."""

    def __init__(
        self, app: Any, *, max_header_bytes: int, header_timeout_s: float, **kwargs: Any
    ) -> None:
        super().__init__(app, h11_max_incomplete_event_size=max_header_bytes, **kwargs)
        self.max_header_bytes = max_header_bytes
        self.header_timeout_s = header_timeout_s


class _HeadTooLarge(Exception):
    pass


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """httptools, with a deadline and a size limit on each request's head."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._max_head = int(getattr(config, "max_header_bytes", 32 * 1024))
        self._head_timeout = float(getattr(config, "header_timeout_s", 10.0))
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = True  # reading a request's head (or waiting for one to start)
        self._head_bytes = 0  # bytes of the current head, counted by the parser's callbacks
        self._raw_bytes = 0  # bytes received while the head is not complete
        self._too_large = False

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self._head_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self._in_head and not self.transport.is_closing():
            self.logger.debug("closing a connection whose request head took too long")
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self._in_head:  # bytes between requests start the next head
            self._in_head, self._head_bytes, self._raw_bytes = True, 0, 0
        if self._in_head:
            self._arm()
        super().data_received(data)  # parses; a head too large ends in send_400_response
        if self._in_head and self.transport is not None and not self.transport.is_closing():
            self._raw_bytes += len(data)  # all of it is head: the head did not end here
            if self._raw_bytes > self._max_head:
                self._too_large = True
                self.send_400_response("request header fields too large")

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            super().send_400_response(msg)
            return
        self._disarm()
        body = f"the request's head is larger than {self._max_head} bytes".encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()

    # Parser callbacks: count the head; at its end, check its size and stop the clock.

    def on_message_begin(self) -> None:
        self._in_head, self._head_bytes, self._raw_bytes = True, 0, 0
        self._arm()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._max_head:
            self._too_large = True
            raise _HeadTooLarge  # httptools turns it into HttpParserCallbackError: 431 above
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()
