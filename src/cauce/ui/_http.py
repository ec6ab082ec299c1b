"""Requests and responses of the portal, independent of the server that carries them."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

__all__ = [
    "BadRequest",
    "NotFound",
    "Request",
    "Response",
    "finite",
    "html_response",
    "json_response",
    "not_found",
    "parse_int",
    "to_json",
]


class NotFound(Exception):
    """Answered 404: no such page, job, task, study or file."""


class BadRequest(Exception):
    """Answered 400: a query parameter that is not what the page takes (a number that is not)."""


_INT_LIMIT = 2**62  # well inside SQLite's integers and a file offset


def parse_int(text: str, what: str) -> int:
    """``text`` as a whole number within +-2**62 (ASCII digits only: ``"²".isdigit()``)."""
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()):
        raise BadRequest(f"{what} must be a whole number, got {text[:40]!r}")
    value = int(text)
    if abs(value) > _INT_LIMIT:
        raise BadRequest(f"{what} is out of range, got {text[:40]}")
    return value


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes = b""

    @classmethod
    def parse(cls, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Request:
        path, _, query = target.partition("?")
        return cls(method, path, parse_qs(query), headers, body)

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    def int_arg(self, name: str, default: int) -> int:
        """The parameter as a number (:class:`BadRequest` if it is not one), else ``default``."""
        raw = self.arg(name)
        return parse_int(raw, name) if raw else default


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes | Iterator[bytes]
    headers: dict[str, str] = field(default_factory=dict)


def html_response(text: str, status: int = 200) -> Response:
    return Response(status, "text/html; charset=utf-8", text.encode())


def finite(value: Any) -> Any:
    """``value`` with NaN and infinite floats as None: JSON has no word for them (``json.dumps``
    writes ``Infinity``, which ``JSON.parse`` refuses)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def to_json(value: Any, **kwargs: Any) -> str:
    """Strict JSON of ``value`` (non-finite floats as null; what JSON cannot hold as text)."""
    return json.dumps(finite(value), allow_nan=False, default=str, **kwargs)


def json_response(value: Any, status: int = 200) -> Response:
    data = to_json(value, separators=(",", ":")).encode()
    return Response(status, "application/json", data)


def not_found(what: str = "not found") -> NotFound:
    return NotFound(what)
