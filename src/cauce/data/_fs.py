"""Paths and URIs through fsspec: resolving, hashing, atomic small writes, listing Parquet files.

pyarrow reads Parquet through its own native filesystem when it has one for the store (local
files, S3, GCS, HDFS; C++ with its own I/O threads) and the store's settings are where pyarrow
looks too (the environment, the cloud SDKs' files); otherwise (``storage_options``, fsspec's
configuration, a store pyarrow lacks) through fsspec, wrapped for pyarrow in Python.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import uuid
from collections.abc import Mapping
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
from fsspec.implementations.local import LocalFileSystem

from cauce._util.files import atomic_write_bytes, fsync_tree
from cauce.data.api import DataError

_CHUNK = 8 * 1024 * 1024
# Object stores: one PUT replaces an object atomically; there is no rename.
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})
# Stores pyarrow has a native filesystem for, and the scheme it knows them by.
_ARROW_NATIVE = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "hdfs": "hdfs"}

#: The variables that say where an S3 store is and who may use it: a job's tasks and Spark's
#: executors get the driver's (docs/data.md, "Shared storage").
STORAGE_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)

log = logging.getLogger(__name__)


def resolve(uri: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> Fs:
    """The filesystem and path behind ``uri`` (a local path or an fsspec URI)."""
    text = os.fspath(uri)
    try:
        fs, path = fsspec.core.url_to_fs(text, **dict(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise DataError(f"{text}: cannot open this location: {exc}", path=text) from exc
    except OSError as exc:
        if text.startswith(("hdfs://", "viewfs://")):
            raise DataError(
                f"{text}: no HDFS client on this host ({exc}): pyarrow reaches HDFS through "
                "libhdfs, which needs Hadoop here (HADOOP_HOME, JAVA_HOME and CLASSPATH from "
                "`hadoop classpath --glob`); see docs/data.md",
                path=text,
            ) from exc
        raise DataError(f"{text}: cannot open this location: {exc}", path=text) from exc
    # Settings given in fsspec's form only fsspec understands: then pyarrow goes through it.
    native = not storage_options and not fsspec.config.conf.get(_protocol(fs))
    return Fs(fs, path, text, native=native)


def portable_options(fs: Fs) -> dict[str, Any]:
    """Options that open ``fs``'s store in another process on another host as it is opened
    here: the storage options it was given, or for S3 the settings this process has in its
    environment (``STORAGE_ENV``), made explicit."""
    given = dict(getattr(fs.fs, "storage_options", {}) or {})
    if given or _protocol(fs.fs) not in ("s3", "s3a"):
        return given
    env = os.environ
    options: dict[str, Any] = {}
    for name, key in (
        ("AWS_ACCESS_KEY_ID", "key"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_SESSION_TOKEN", "token"),
    ):
        if env.get(name):
            options[key] = env[name]
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["client_kwargs"] = {"region_name": region}
    return options


class Fs:
    """A filesystem rooted at one path, with the few operations the data layer needs.

    ``native``: pyarrow may use its own filesystem for this store (see the module's doc).
    """

    def __init__(
        self, fs: fsspec.AbstractFileSystem, root: str, uri: str, *, native: bool = True
    ) -> None:
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.uri = uri
        self.native = native

    @functools.cached_property
    def arrow_fs(self) -> pafs.FileSystem:
        """This filesystem for pyarrow (which then opens and closes files itself)."""
        if self.local:
            return pafs.LocalFileSystem()
        found = _native_arrow_fs(self.uri, _protocol(self.fs), self.root) if self.native else None
        return found or pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

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


def _native_arrow_fs(uri: str, protocol: str, root: str) -> pafs.FileSystem | None:
    """pyarrow's own filesystem for ``uri``, if it has one that names paths as fsspec does."""
    scheme = _ARROW_NATIVE.get(protocol)
    if scheme is None:
        return None
    _, sep, rest = uri.partition("://")
    try:
        found, path = pafs.FileSystem.from_uri(f"{scheme}://{rest}" if sep else uri)
    except (pa.ArrowException, OSError, ValueError) as exc:  # no libhdfs, no JVM, a bad URI
        log.debug("pyarrow has no native filesystem for %s (%s); using fsspec", uri, exc)
        return None
    if path.rstrip("/") != root.rstrip("/"):
        log.debug("pyarrow names %s as %r, fsspec as %r; using fsspec", uri, path, root)
        return None
    return found


def _protocol(fs: fsspec.AbstractFileSystem) -> str:
    proto = fs.protocol
    return proto if isinstance(proto, str) else proto[0]
