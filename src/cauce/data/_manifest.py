"""The manifest file: writing it from the Parquet files of a prepare, reading it back."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cauce.data._fs import Fs, resolve
from cauce.data._parquet import ARROW_ERRORS, open_parquet, plain_schema, schema_difference
from cauce.data.api import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    ColumnInfo,
    DataError,
    DataNotFound,
    FileInfo,
    InputInfo,
    Manifest,
    Source,
    SplitInfo,
)


def read_manifest(
    path: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
) -> Manifest:
    """Read the manifest of the prepared dataset at ``path`` (a directory, local or a URI)."""
    return load(resolve(path, storage_options))


def load(fs: Fs) -> Manifest:
    where = fs.display(fs.join(MANIFEST_NAME))
    try:
        data = fs.read_bytes(fs.join(MANIFEST_NAME))
    except FileNotFoundError:
        raise not_prepared(fs) from None
    try:
        raw = json.loads(data)
        return from_dict(raw, fs.uri)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{where}: unreadable manifest ({exc})", path=where) from exc


def not_prepared(fs: Fs) -> DataError:
    return DataNotFound(
        f"{fs.uri}: not a prepared dataset (no {MANIFEST_NAME}; an interrupted prepare leaves "
        "none)",
        path=fs.uri,
    )


def from_dict(raw: Mapping[str, Any], root: str) -> Manifest:
    version = int(raw["format_version"])
    if version > FORMAT_VERSION:
        raise ValueError(f"format_version {version} is newer than this cauce reads")
    src = raw["source"]
    return Manifest(
        root=root,
        schema=tuple(ColumnInfo(**c) for c in raw["schema"]),
        splits={
            name: SplitInfo(
                name=name,
                rows=int(s["rows"]),
                files=tuple(
                    FileInfo(
                        path=f["path"],
                        rows=int(f["rows"]),
                        row_groups=tuple(int(n) for n in f["row_groups"]),
                        bytes=int(f["bytes"]),
                        sha256=f["sha256"],
                    )
                    for f in s["files"]
                ),
            )
            for name, s in raw["splits"].items()
        },
        vocabularies={k: tuple(v) for k, v in raw["vocabularies"].items()},
        content_hash=raw["content_hash"],
        source=Source(
            function=src["function"],
            code_hash=src["code_hash"],
            code_files=tuple(src["code_files"]),
            inputs=tuple(InputInfo(**i) for i in src["inputs"]),
            engine=src["engine"],
            engine_version=src["engine_version"],
            options=dict(src["options"]),
            cache_key=src["cache_key"],
        ),
        created_at=raw["created_at"],
        arrow_schema=base64.b64decode(raw["arrow_schema"]),
        format_version=version,
    )


def to_json(m: Manifest) -> bytes:
    src = m.source
    raw = {
        "format_version": m.format_version,
        "created_at": m.created_at,
        "content_hash": m.content_hash,
        "schema": [vars(c) for c in m.schema],
        "splits": {
            name: {
                "rows": s.rows,
                "row_groups": s.row_groups,
                "files": [
                    {
                        "path": f.path,
                        "rows": f.rows,
                        "row_groups": list(f.row_groups),
                        "bytes": f.bytes,
                        "sha256": f.sha256,
                    }
                    for f in s.files
                ],
            }
            for name, s in m.splits.items()
        },
        "vocabularies": {k: list(v) for k, v in m.vocabularies.items()},
        "source": {
            "function": src.function,
            "code_hash": src.code_hash,
            "code_files": list(src.code_files),
            "inputs": [vars(i) for i in src.inputs],
            "engine": src.engine,
            "engine_version": src.engine_version,
            "options": dict(src.options),
            "cache_key": src.cache_key,
        },
        "arrow_schema": base64.b64encode(m.arrow_schema).decode("ascii"),
    }
    return (json.dumps(raw, indent=1) + "\n").encode()


def arrow_schema(m: Manifest) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(m.arrow_schema))


def describe(
    fs: Fs,
    version_dir: str,
    split_names: Sequence[str],
    categorical: Sequence[str] | None,
    source: Source,
) -> Manifest:
    """Build the manifest of the Parquet files an engine wrote under ``version_dir``."""
    schema: pa.Schema | None = None
    first = ""
    splits: dict[str, SplitInfo] = {}
    for split in split_names:
        files = []
        for path in fs.parquet_files(fs.join(version_dir, split)):
            with open_parquet(fs, path) as pf:
                file_schema = plain_schema(pf.schema_arrow)
                meta = pf.metadata
            if schema is None:
                schema, first = file_schema, path
            elif diff := schema_difference(schema, file_schema):
                raise DataError(
                    f"{fs.display(path)}: schema differs from {fs.display(first)}: {diff}",
                    path=fs.display(path),
                )
            files.append(
                FileInfo(
                    path=path[len(fs.root) :].lstrip("/"),
                    rows=meta.num_rows,
                    row_groups=tuple(
                        meta.row_group(i).num_rows for i in range(meta.num_row_groups)
                    ),
                    bytes=fs.size(path),
                    sha256=fs.sha256(path),
                )
            )
        if not files:
            raise DataError(f"{fs.display(fs.join(version_dir, split))}: engine wrote no files")
        splits[split] = SplitInfo(split, sum(f.rows for f in files), tuple(files))
    if schema is None:
        raise DataError(f"{fs.uri}: the function returned no splits", path=fs.uri)
    if categorical is None:  # default: every string column
        categorical = [f.name for f in schema if pa.types.is_string(f.type)]
    for name in categorical:
        if name not in schema.names:
            raise DataError(
                f"{fs.uri}: categorical column {name!r} is not in the output "
                f"(columns: {', '.join(schema.names)})"
            )
        kind = schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_integer(kind)):
            raise DataError(
                f"{fs.uri}: categorical column {name!r} is {kind}; "
                "categorical columns must be strings or integers"
            )
    vocab_split = "train" if "train" in splits else split_names[0]
    schema_bytes = schema.serialize().to_pybytes()
    return Manifest(
        root=fs.uri,
        schema=tuple(ColumnInfo(f.name, str(f.type), f.nullable) for f in schema),
        splits=splits,
        vocabularies=vocabularies(fs, splits[vocab_split], list(categorical)),
        content_hash=content_hash(schema_bytes, splits),
        source=source,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        arrow_schema=schema_bytes,
    )


def vocabularies(fs: Fs, split: SplitInfo, columns: list[str]) -> dict[str, tuple[str | int, ...]]:
    """Sorted distinct non-null values of ``columns`` in ``split``, read a row group at a time."""
    seen: dict[str, set[Any]] = {c: set() for c in columns}
    if not columns:
        return {}
    for info in split.files:
        path = fs.join(info.path)
        try:
            with open_parquet(fs, path) as pf:
                for i in range(pf.metadata.num_row_groups):
                    table = pf.read_row_group(i, columns=columns)
                    for name in columns:
                        values = pc.unique(table.column(name).drop_null())
                        seen[name].update(values.to_pylist())
        except ARROW_ERRORS as exc:
            raise DataError(f"{fs.display(path)}: cannot read ({exc})") from exc
    return {name: tuple(sorted(values)) for name, values in seen.items()}


def content_hash(schema_bytes: bytes, splits: Mapping[str, SplitInfo]) -> str:
    digest = hashlib.sha256(schema_bytes)
    for name, split in splits.items():
        for f in split.files:
            digest.update(f"{name}\0{f.rows}\0{f.sha256}\n".encode())
    return digest.hexdigest()
