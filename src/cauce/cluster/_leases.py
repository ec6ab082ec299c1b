"""GPU leases shared by every cauce driver on a host.

One lock file per GPU, held with ``flock`` for as long as a gang holds the GPU. The kernel drops
a lock when its holder dies, however it dies, so a crashed driver never leaves a GPU leased.
The file's text names the holder, for messages only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cauce._util.locks import FileLock

__all__ = ["GpuLeases", "Lease"]


@dataclass
class Lease:
    gpu: str
    lock: FileLock

    def release(self) -> None:
        self.lock.release()


class GpuLeases:
    def __init__(self, lease_dir: str) -> None:
        self.lease_dir = lease_dir

    def _ensure_dir(self) -> None:
        if not os.path.isdir(self.lease_dir):
            os.makedirs(self.lease_dir, exist_ok=True)
            # Drivers of every user on the host share the leases.
            with contextlib.suppress(OSError):
                os.chmod(self.lease_dir, 0o1777)

    def _path(self, gpu: str) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in gpu)
        return os.path.join(self.lease_dir, f"gpu-{safe}.lock")

    def _try_one(self, gpu: str, holder: str) -> Lease | None:
        lock = FileLock.try_acquire(self._path(gpu))
        if lock is None:
            return None
        with contextlib.suppress(OSError):
            os.fchmod(lock.fd, 0o666)
            os.ftruncate(lock.fd, 0)
            os.pwrite(lock.fd, holder.encode(), 0)
        return Lease(gpu, lock)

    def try_acquire(
        self, gpus: Sequence[str], count: int, holder: str
    ) -> tuple[list[Lease] | None, int]:
        """Lease ``count`` of ``gpus``, all or none: (the leases, ``count``), or (None, how many
        GPUs were free) when fewer than ``count`` are.

        It stops at the ``count``-th lease: counting the other free GPUs would lock each for a
        moment, and a driver asking at that moment would find it taken and wait for nothing
        (two trials starting at once, each for 2 of 4 GPUs, then saw "needs 2 GPUs, 1 free")."""
        if count == 0:
            return [], len(gpus)
        self._ensure_dir()
        got: list[Lease] = []
        for gpu in gpus:
            lease = self._try_one(gpu, holder)
            if lease is None:
                continue
            got.append(lease)
            if len(got) == count:
                return got, count
        for lease in got:
            lease.release()
        return None, len(got)

    def holder(self, gpu: str) -> str:
        """Who holds ``gpu`` (from the lock file's text), or "" if unknown."""
        try:
            with open(self._path(gpu), encoding="utf-8", errors="replace") as file:
                return file.read().strip()
        except OSError:
            return ""
