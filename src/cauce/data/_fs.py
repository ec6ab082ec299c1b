"""Paths and URIs through fsspec: resolving, hashing, atomic small writes, listing Parquet files."""

from __future__ import annotations

import functools
import hashlib
import os
import uuid
from collections.abc import Mapping
from typing import Any

import fsspec
import pyarrow.fs as pafs
from fsspec.implementations.local import LocalFileSystem

from cauce._util.files import atomic_write_bytes, fsync_tree
from cauce.data.api import DataError

_CHUNK = 8 * 1024 * 1024
# Object stores: one PUT replaces an object atomically; there is no rename.
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})


def resolve(uri: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> Fs:
    """The filesystem and path behind ``uri`` (a local path or an fsspec URI)."""
    text = os.fspath(uri)
    try:
        fs, path = fsspec.core.url_to_fs(text, **dict(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise DataError(f"{text}: cannot open this location: {exc}", path=text) from exc
    return Fs(fs, path, text)


class Fs:
    """A filesystem rooted at one path, with the few operations the data layer needs."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, uri: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.uri = uri

    @functools.cached_property
    def arrow_fs(self) -> pafs.FileSystem:
        """This filesystem for pyarrow (which then opens and closes files itself)."""
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    @property
    def local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *(p.strip("/") for p in parts if p)])

    def display(self, path: str) -> str:
        """``path`` as the user would write it: with the URI scheme for remote stores."""
        if self.local:
            return path
        return self.fs.unstrip_protocol(path)  # type: ignore[no-any-return]

    def exists(self, path: str) -> bool:
        self.fs.invalidate_cache(path)
        return bool(self.fs.exists(path))

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)  # type: ignore[no-any-return]

    def write_atomic(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` so that readers see the old or the new content, whole."""
        if self.local:
            atomic_write_bytes(path, data)
        elif _protocol(self.fs) in _OBJECT_STORES:
            self.fs.pipe_file(path, data)
        else:  # HDFS and the like: rename within one directory is atomic
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)

    def sha256(self, path: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def size(self, path: str) -> int:
        return int(self.fs.size(path))

    def remove_tree(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path, exist_ok=True)

    def list_dirs(self, path: str) -> list[str]:
        self.fs.invalidate_cache(path)  # object stores' listings are cached; others write too
        if not self.fs.exists(path):
            return []
        return sorted(
            str(e["name"]) for e in self.fs.ls(path, detail=True) if e.get("type") == "directory"
        )

    def parquet_files(self, path: str) -> list[str]:
        """Parquet files under ``path`` (or ``path`` itself), sorted; hidden files left out."""
        self.fs.invalidate_cache(path)
        if self.fs.isfile(path):
            return [path]
        files = []
        for name in self.fs.find(path):
            rel = name[len(path) :].lstrip("/")
            if any(part.startswith(("_", ".")) for part in rel.split("/")):
                continue  # _SUCCESS, .crc files, _manifest.json, hidden directories
            if name.endswith((".parquet", ".parq")) or "." not in rel.rsplit("/", 1)[-1]:
                files.append(name)
        return sorted(files)

    def fsync_tree(self, path: str) -> None:
        """Flush every file under a local ``path`` to disk (no-op for remote stores)."""
        if self.local:
            fsync_tree(path)


def _protocol(fs: fsspec.AbstractFileSystem) -> str:
    proto = fs.protocol
    return proto if isinstance(proto, str) else proto[0]
