"""The store's write transactions, tried again while a database server does not answer.

A server across the network that does not answer a write (restarting, failing over, or this
host cut off for longer than a connection's time limit, ``_url.py``) is asked again, with
backoff, for as long as other hosts wait before they take a silent driver for gone
(``CAUCE_LOST_AFTER``): a job rides out the outage and loses nothing. So are the calls of a
study's Optuna storage on the same database (``cauce.tune._patient``). Not SQLite: its errors do
not go away by waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cauce.errors import HistoryError
from cauce.history._url import unanswered, why

__all__ = ["Writer"]

T = TypeVar("T")

log = logging.getLogger(__name__)

_FIRST_PAUSE = 0.5  # seconds before the second try; doubled after each, up to _LONGEST_PAUSE
_LONGEST_PAUSE = 5.0


class Writer:
    def __init__(self, engine: Engine, shown: str, patience: float) -> None:
        self.engine = engine
        self.shown = shown  # the URL as messages show it
        self.patience = patience
        self._remote = engine.dialect.name != "sqlite"
        self._unanswered = threading.Event()  # said once while it lasts, not once per write
        self._impatient = False  # set by give_up(), from a signal handler: a plain flag
        self.answering_since = 0.0  # monotonic: when the server last answered after an outage

    def give_up(self) -> None:
        """From now on a write that the server does not answer fails at once instead of being
        tried again: a driver that is asked to stop stops (safe in a signal handler)."""
        self._impatient = True

    def run(self, body: Callable[[Any], None]) -> None:
        """``body(connection)`` in one transaction, tried again while the server does not
        answer (:meth:`call`). Raises :class:`HistoryError`."""

        def transaction() -> None:
            with self.engine.begin() as conn:
                body(conn)

        try:
            self.call(transaction)
        except sa.exc.SQLAlchemyError as exc:
            raise HistoryError(f"history store write failed: {why(exc)}") from exc

    def call(self, work: Callable[[], T]) -> T:
        """``work()``, called again while the server does not answer it (:func:`unanswered`,
        whichever library wrapped the error: SQLAlchemy, Optuna), at most ``patience`` seconds
        after the first failure; then, or for any other error, what it raised. A transaction
        whose commit went through but whose answer was lost is then made twice: a metric value
        or an event may be written twice."""
        first, pause = 0.0, _FIRST_PAUSE
        while True:
            try:
                result = work()
            except Exception as exc:
                words = unanswered(exc) if self._remote else None
                now = time.monotonic()
                first = first or now
                late = now - first + pause > self.patience
                if words is None or late or self._impatient:
                    raise
                self._say(words)
                until = now + pause
                while time.monotonic() < until and not self._impatient:
                    time.sleep(0.05)
                pause = min(pause * 2, _LONGEST_PAUSE)
                continue
            if self._unanswered.is_set():
                self.answering_since = time.monotonic()
                self._unanswered.clear()
                log.warning("the history %s answers again", self.shown)
            return result

    def _say(self, words: str) -> None:
        if not self._unanswered.is_set():
            self._unanswered.set()
            log.warning(
                "the history %s does not answer (%s); it is asked again for up to %g s",
                self.shown,
                words,
                self.patience,
            )
