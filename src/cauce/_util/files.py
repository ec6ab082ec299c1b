"""Atomic writes: readers see the old content or the new one, whole, even after a crash. And
where cauce's caches go."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "cache_dir",
    "fsync_dir",
    "fsync_tree",
    "swap_dir",
]


def cache_dir(name: str, environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CACHE_HOME/cauce/NAME`` (``~/.cache/cauce/NAME``): where cauce keeps what it can
    make again (not created here)."""
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cauce" / name


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where folders cannot be
    opened (some file systems refuse ``fsync`` on a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(os.fspath(path) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data``: a temp file in the same folder, written, flushed to disk,
    renamed over ``path``, then the folder flushed. The temp file is removed on any error."""
    target = os.fspath(path)
    folder = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(
    path: str | os.PathLike[str], obj: object, *, indent: int | None = 2, sort_keys: bool = False
) -> None:
    """:func:`atomic_write_text` of ``obj`` as JSON (non-ASCII kept), ending with a newline."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
    atomic_write_text(path, text + "\n")


def fsync_tree(path: str | os.PathLike[str]) -> None:
    """Flush every file and folder under ``path`` to disk."""
    for dirpath, _, names in os.walk(path):
        for name in names:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def swap_dir(tmp: Path, final: Path) -> None:
    """Publish ``tmp``, a fully written folder, as ``final``: flush it to disk, move an existing
    ``final`` aside, rename ``tmp`` to ``final``, remove the old one, flush the parent folder.

    Readers see the old folder or the new one, never a mix. If the rename fails, the old folder
    is put back and ``tmp`` is left for the caller to remove.
    """
    fsync_tree(tmp)
    old: Path | None = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        final.rename(old)
    try:
        tmp.rename(final)
    except BaseException:
        if old is not None:
            with contextlib.suppress(OSError):
                old.rename(final)
        raise
    if old is not None and old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    elif old is not None:
        with contextlib.suppress(OSError):
            old.unlink()
    fsync_dir(final.parent)
