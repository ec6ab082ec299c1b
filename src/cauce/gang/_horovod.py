"""The driver's side of Horovod's Gloo rendezvous: a key-value store the launcher serves
(``cauce.frameworks._horovod_kv``), started for the first attempt and emptied for each restart."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cauce.frameworks._horovod_kv import HorovodKVServer

__all__ = ["HorovodRendezvous"]

_HOST = "127.0.0.1"


class HorovodRendezvous:
    def __init__(self) -> None:
        self._server: HorovodKVServer | None = None
        self.address: str | None = None

    def for_attempt(self) -> str:
        """The store's ``host:port``, started now or emptied: a restarted gang starts afresh."""
        if self._server is not None and self.address is not None:
            self._server.clear()
            return self.address
        from cauce.frameworks import _horovod_kv

        self._server, port = _horovod_kv.start(_HOST)
        self.address = f"{_HOST}:{port}"
        return self.address

    def stop(self) -> None:
        if self._server is not None:
            from cauce.frameworks import _horovod_kv

            _horovod_kv.stop(self._server)
            self._server = None
