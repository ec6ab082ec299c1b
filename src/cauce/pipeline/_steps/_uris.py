"""Step settings that may name shared storage (``s3://bucket/...``, ``hdfs://...``) instead of a
local path: kept as URIs, read and written through fsspec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cauce._util.files import atomic_write_json
from cauce._util.remote import is_uri, url_to_fs
from cauce.pipeline._context import StepContext

__all__ = ["exists", "location", "read_json", "write_json"]


def location(ctx: StepContext, value: object) -> Path | str:
    """A URI as it is; a path from the pipeline file's folder."""
    return str(value) if is_uri(value) else ctx.path(str(value))


def _fs(uri: str) -> tuple[Any, str]:
    fs, path = url_to_fs(uri)
    fs.invalidate_cache(path)
    return fs, path


def exists(where: Path | str) -> bool:
    if not is_uri(where):
        return Path(where).exists()
    fs, path = _fs(str(where))
    return bool(fs.exists(path))


def read_json(where: Path | str) -> Any:
    if not is_uri(where):
        return json.loads(Path(where).read_text(encoding="utf-8"))
    fs, path = _fs(str(where))
    return json.loads(fs.cat_file(path))


def write_json(where: Path | str, data: Any) -> None:
    """Atomically: readers see the old content or the new one, whole (an object store's PUT)."""
    if not is_uri(where):
        atomic_write_json(where, data)
        return
    fs, path = _fs(str(where))
    fs.pipe_file(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
