"""Plain ASGI helpers: bounded request bodies and JSON responses.

The server is one ASGI callable on uvicorn (httptools + uvloop), without a web framework: its
eight routes do not need one, and every microsecond a framework spends per request is latency
that a lone client sees (see docs/serving.md).
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from cauce.serve.api import InvalidInput

__all__ = ["Disconnected", "Response", "error_response", "header", "json_response", "read_body"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = (b"content-type", b"application/json")


class Disconnected(Exception):
    """The client went away before its request was read."""


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    async def send(self, send: Send) -> None:
        headers = [*self.headers, (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def json_response(status: int, doc: Any, *extra: tuple[bytes, bytes]) -> Response:
    return Response(status, orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), [_JSON, *extra])


def error_response(status: int, message: str, *extra: tuple[bytes, bytes]) -> Response:
    return json_response(status, {"error": message}, *extra)


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    wbits = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}.get(encoding.lower())
    if wbits is None:
        raise InvalidInput(
            f"Content-Encoding {encoding.decode(errors='replace')!r} is not supported "
            "(gzip, deflate or none)",
            status=415,
        )
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {encoding.decode()}: {exc}") from None
    if len(out) > limit:
        raise InvalidInput(f"the decompressed body is larger than {limit} bytes", status=413)
    return out


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    length = header(scope, b"content-length")
    if length is not None:
        if not length.isdigit():
            raise InvalidInput("Content-Length must be a number")
        if int(length) > limit:
            raise InvalidInput(
                f"the body has {int(length)} bytes, more than the limit of {limit}", status=413
            )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise InvalidInput(f"the body is larger than the limit of {limit} bytes", status=413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = header(scope, b"content-encoding")
    if encoding is not None and encoding.lower() != b"identity":
        body = _decompress(body, encoding, limit)
    return body
