"""Database URLs and connections: as messages show them, how they are opened, how long they may
go unanswered, and how their failures are told."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from cauce.errors import CauceError

__all__ = [
    "LOST_AFTER",
    "connect_args",
    "log_failure",
    "lost_after",
    "shown_url",
    "unanswered",
    "why",
]

LOST_AFTER = 60.0


def lost_after(env: Mapping[str, str] = os.environ) -> float:
    """Seconds without a heartbeat after which a driver or tuner on another host is taken for
    gone (``CAUCE_LOST_AFTER``)."""
    text = env.get("CAUCE_LOST_AFTER", "")
    if not text:
        return LOST_AFTER
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 1 <= value <= 86_400:
        raise CauceError(
            f"CAUCE_LOST_AFTER={text!r}: give seconds between 1 and 86400 (how long a driver or "
            f"tuner on another host may be silent before it is taken for gone; default "
            f"{LOST_AFTER:g})"
        )
    return value


def shown_url(url: str) -> str:
    """``url`` as messages show it: a password in it becomes ``***``."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


# How long a call may wait on a PostgreSQL server across the network, when its URL does not say
# (libpq's parameters; a URL's ``?connect_timeout=...`` wins). Without them, a host cut off from
# the database blocks in a write for as long as TCP retransmits (15 minutes on Linux).
_PG_LIMITS: dict[str, int] = {
    "connect_timeout": 10,  # seconds to open a connection
    "tcp_user_timeout": 30_000,  # ms that sent data may stay unacknowledged
    "keepalives": 1,  # probe an idle connection: a server gone while we wait for its answer
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


def connect_args(url: str) -> dict[str, Any]:
    """The driver's connection arguments for ``url``: for PostgreSQL through libpq (psycopg,
    psycopg2), the time limits above, so that a database that stops answering fails a call in
    about 30 s instead of blocking it for TCP's quarter of an hour."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return {}
    if parsed.get_backend_name() != "postgresql":
        return {}
    if parsed.get_driver_name() not in ("psycopg", "psycopg2"):
        return {}
    return {k: v for k, v in _PG_LIMITS.items() if k not in parsed.query}


def unanswered(exc: BaseException) -> str | None:
    """When ``exc``, or an error it was raised from, is the database not answering (a connection
    refused, lost or timed out: the driver's OperationalError, which SQLAlchemy wraps and Optuna
    wraps again), the driver's first line for it; None for any other error."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain of wrappers, never a loop
        if seen is None:
            return None
        if isinstance(seen, sa.exc.OperationalError):
            text = str(seen.orig if seen.orig is not None else seen).strip()
            return text.splitlines()[0] if text else type(seen.orig).__name__
        seen = seen.__cause__ or seen.__context__
    return None


def why(exc: BaseException) -> str:
    """``exc`` in one line for a message: the driver's words when the database did not answer
    (not SQLAlchemy's statement and parameters), the error itself otherwise."""
    return unanswered(exc) or str(exc)


def log_failure(
    log: logging.Logger, exc: BaseException, what: str, *args: object, level: int = logging.ERROR
) -> None:
    """Log ``what % args`` for ``exc``: in one line, a warning, when the database did not answer
    (a host cut off from it says so once per failed call, not with a traceback each time);
    with the traceback at ``level`` otherwise."""
    words = unanswered(exc)
    if words is None:
        log.log(level, what, *args, exc_info=exc)
    else:
        log.warning("%s: the database did not answer: %s", what % args, words)
