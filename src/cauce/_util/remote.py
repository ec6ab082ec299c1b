"""Shared storage named by URI (``s3://bucket/key``, ``hdfs://...``), reached through fsspec.

``file://`` URIs and plain paths are local: callers use :mod:`pathlib` for those.
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_registry_uri", "is_uri", "url_to_fs"]


def is_uri(value: object) -> bool:
    """True for a remote URI; False for a local path, a ``file://`` URI or a non-string."""
    return isinstance(value, str) and "://" in value and not value.startswith("file://")


def url_to_fs(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem for ``uri`` and the path in it, without a trailing slash (fsspec is
    imported here, only by callers that met a URI)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    return fs, str(path).rstrip("/")


def is_registry_uri(value: object) -> bool:
    """True for a version of MLflow's model registry: ``models:/NAME/VERSION``,
    ``models:/NAME@ALIAS``."""
    return isinstance(value, str) and value.startswith("models:/")
