"""Advisory file locks (``flock``): held while the holder lives; the kernel drops them when it
dies, however it dies."""

from __future__ import annotations

import contextlib
import fcntl
import os
from types import TracebackType

__all__ = ["FileLock", "read_holder_pid"]


class FileLock:
    """An exclusive ``flock`` on a file, taken with :meth:`try_acquire`.

    ``fd`` is the open file descriptor (``-1`` once released). Not thread-safe: one owner.
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def try_acquire(
        cls, path: str | os.PathLike[str], *, write_pid: bool = False
    ) -> FileLock | None:
        """Lock ``path`` (created if missing) without waiting; None when another holds it.

        With ``write_pid``, the file's content is replaced by this process's pid (for
        :func:`read_holder_pid`; messages only, the lock is what counts).
        """
        name = os.fspath(path)
        fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if write_pid:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(name, fd)

    @classmethod
    def wait(cls, path: str | os.PathLike[str]) -> FileLock:
        """Lock ``path``, an existing file or folder that stays as it is (opened read-only),
        waiting as long as another holds it. Not a SQLite database: closing a descriptor of it
        drops the ``fcntl`` locks of the process's connections to it."""
        name = os.fspath(path)
        fd = os.open(name, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return cls(name, fd)

    def release(self) -> None:
        """Drop the lock and close the file; safe to call more than once."""
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)

    def __enter__(self) -> FileLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def read_holder_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid written by a holder that passed ``write_pid``; None if absent or unreadable."""
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            text = file.read(64).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
