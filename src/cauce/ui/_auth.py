"""Who may read the portal: anyone on this host when it listens on loopback only; with a token
(``--token`` or ``$CAUCE_UI_TOKEN``), whoever shows it, as a bearer header or as the cookie
the login form sets. Tokens are compared in constant time."""

from __future__ import annotations

import errno
import hmac
import socket
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from cauce._util.net import is_loopback
from cauce.errors import CauceError, SpecError

__all__ = ["COOKIE", "bind_error", "check_bind", "host_ok", "is_loopback", "token_ok"]

COOKIE = "cauce_ui_token"


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this host without a token (a usage error: exit 2)."""
    if not is_loopback(host) and not token:
        raise SpecError(
            "--host",
            f"{host} would show the history to the network without a token: give one with "
            "--token TOKEN or $CAUCE_UI_TOKEN, or keep the default --host 127.0.0.1",
            value=host,
        )


def bind_error(host: str, port: int, exc: OSError) -> CauceError:
    """Why listening on ``host:port`` failed, as one line: a host that does not resolve or is
    not this machine's is a usage error naming ``--host`` (exit 2); otherwise the port."""
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return SpecError(
            "--host",
            f"{host} is not an address of this machine ({exc.strerror or exc}): give one of "
            "its addresses or names, or keep the default 127.0.0.1",
            value=host,
        )
    return CauceError(
        f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port"
    )


def host_ok(headers: Mapping[str, str], bound: str) -> bool:
    """Whether the ``Host`` a request names is this host (a loopback name or the one bound, any
    port): a page whose name was rebound to 127.0.0.1 sends its own name and is refused."""
    given = next((v for k, v in headers.items() if k.lower() == "host"), "")
    try:
        name = urlsplit(f"//{given.strip()}").hostname
    except ValueError:
        return False
    return name is not None and name in {"127.0.0.1", "localhost", "::1", bound.strip("[]").lower()}


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def token_ok(headers: Mapping[str, str], token: str | None) -> bool:
    """Whether a request shows the token (always, when there is none)."""
    if not token:
        return True
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer ") and _same(auth[7:].strip(), token):
        return True
    raw = headers.get("Cookie", "")
    if raw:
        try:
            cookie = SimpleCookie(raw)
        except CookieError:
            return False
        if COOKIE in cookie and _same(cookie[COOKIE].value, token):
            return True
    return False
