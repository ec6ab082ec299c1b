"""The driver's side of Horovod's Gloo rendezvous: a key-value store the launcher serves
(``cauce.frameworks.start_horovod_kv``), started for the first attempt and emptied for each restart.

It listens on the driver's address for its cluster (:meth:`Cluster.driver_address`): loopback on
the local cluster, the address executors reach on Spark, so that tasks on other hosts meet there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cauce.cluster.api import DriverAddress
from cauce.frameworks import host_port

if TYPE_CHECKING:
    from cauce.frameworks import HorovodKVServer

__all__ = ["HorovodRendezvous"]


class HorovodRendezvous:
    def __init__(self, where: Callable[[], DriverAddress]) -> None:
        """``where`` gives the driver's address when the store starts (not before: on Spark
        it is known once the application runs)."""
        self._where = where
        self._server: HorovodKVServer | None = None
        self.address: str | None = None

    def for_attempt(self) -> str:
        """The store's ``host:port``, started now or emptied: a restarted gang starts afresh."""
        if self._server is not None and self.address is not None:
            self._server.clear()
            return self.address
        from cauce.frameworks import start_horovod_kv

        where = self._where()
        self._server, port = start_horovod_kv(where.bind)
        self.address = host_port(where.advertised, port)
        return self.address

    def preview(self) -> str:
        """For a dry run: where the store would be, with a port free now; starts nothing."""
        from cauce.cluster import free_ports

        where = self._where()
        return host_port(where.advertised, free_ports(1, where.bind)[0])

    def stop(self) -> None:
        if self._server is not None:
            from cauce.frameworks import stop_horovod_kv

            stop_horovod_kv(self._server)
            self._server = None
