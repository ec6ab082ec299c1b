"""The files and row groups of one split, from a manifest or from plain Parquet files."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cauce.data import _manifest
from cauce.data._fs import Fs, resolve
from cauce.data._parquet import ARROW_ERRORS, open_parquet, plain_schema, schema_difference
from cauce.data.api import MANIFEST_NAME, DataError, DataNotFound, Manifest


@dataclass(frozen=True)
class Group:
    """Row group ``index`` of file ``file`` (an index into the source's files)."""

    file: int
    index: int
    rows: int


class SplitSource:
    """What a reader needs to know about a split before reading it."""

    def __init__(
        self,
        fs: Fs,
        *,
        files: list[str],
        groups: list[Group],
        schema: pa.Schema,
        vocabularies: Mapping[str, tuple[Any, ...]],
        where: str,
        checked: bool,
        identity: tuple[object, ...],
    ) -> None:
        self.fs, self.files, self.groups, self.schema = fs, files, groups, schema
        self.vocabularies, self.where = vocabularies, where
        #: What the rows are: the same identity, the same rows (the key of the decoded cache).
        self.identity = identity
        self.rows = sum(g.rows for g in groups)
        self._checked = checked  # footers already compared with the schema

    def display(self, file: int) -> str:
        return self.fs.display(self.files[file])

    def row_bytes(self, columns: list[str]) -> int:
        """Estimated bytes per row of ``columns`` once decoded (from the first file's footer)."""
        width = 0
        for name in columns:
            kind = self.schema.field(name).type
            width += 8 if name in self.vocabularies else 0  # the int64 codes
            try:
                width += kind.bit_width // 8
            except ValueError:  # variable width: strings
                width += 16
        for i, path in enumerate(self.files):
            if any(g.file == i and g.rows for g in self.groups):
                with open_parquet(self.fs, path) as pf:
                    meta = pf.metadata
                names = [meta.schema.column(j).name for j in range(meta.num_columns)]
                plain = sum(
                    meta.row_group(r).column(j).total_uncompressed_size
                    for r in range(meta.num_row_groups)
                    for j, n in enumerate(names)
                    if n in columns
                )
                return max(width, int(plain) // max(1, int(meta.num_rows)))
        return width

    def reader(
        self,
        columns: list[str],
        read_dictionary: list[str],
        piece_rows: int,
        *,
        buffer_size: int,
        threads: bool,
    ) -> Reader:
        return Reader(
            self,
            columns,
            read_dictionary,
            piece_rows,
            buffer_size=buffer_size,
            threads=threads,
            check=not self._checked,
        )


class Reader:
    """Reads pieces of row groups, one open file at a time."""

    def __init__(
        self,
        source: SplitSource,
        columns: list[str],
        read_dictionary: list[str],
        piece_rows: int,
        *,
        buffer_size: int,
        threads: bool,
        check: bool,
    ) -> None:
        self._source, self._columns, self._dictionary = source, columns, read_dictionary
        self._piece_rows, self._buffer_size, self._check = piece_rows, buffer_size, check
        self._threads = threads
        self._file = -1
        self._pf: pq.ParquetFile | None = None

    def read(self, group: Group, start: int, stop: int) -> Iterator[pa.RecordBatch]:
        """Rows ``[start, stop)`` of ``group``, in pieces of at most ``piece_rows``."""
        pf = self._open(group.file)
        path = self._source.fs.display(self._source.files[group.file])
        offset = 0
        try:
            for batch in pf.iter_batches(
                batch_size=self._piece_rows,
                row_groups=[group.index],
                columns=self._columns,
                use_threads=self._threads,
            ):
                end = offset + batch.num_rows
                if end > start:
                    yield batch.slice(max(0, start - offset), min(end, stop) - max(start, offset))
                offset = end
                if offset >= stop:
                    break
        except ARROW_ERRORS as exc:
            raise DataError(
                f"{path}: row group {group.index} is unreadable ({exc})", path=path
            ) from exc

    def _open(self, file: int) -> pq.ParquetFile:
        if file == self._file and self._pf is not None:
            return self._pf
        self.close()
        fs = self._source.fs
        path = self._source.files[file]
        pf = open_parquet(
            fs,
            path,
            read_dictionary=self._dictionary,
            pre_buffer=not fs.local and not self._buffer_size,
            buffer_size=self._buffer_size,
        )
        try:
            self._verify(pf, file, fs.display(path))
        except DataError:
            pf.close()
            raise
        self._pf, self._file = pf, file
        return pf

    def _verify(self, pf: pq.ParquetFile, file: int, where: str) -> None:
        if self._check:
            if diff := schema_difference(self._source.schema, plain_schema(pf.schema_arrow)):
                raise DataError(f"{where}: schema differs from the manifest: {diff}", path=where)
            expected = [g.rows for g in self._source.groups if g.file == file]
            meta = pf.metadata
            found = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            if found != expected:
                raise DataError(
                    f"{where}: row groups {found} differ from the manifest's {expected}; the "
                    "file changed after it was prepared",
                    path=where,
                )

    def close(self) -> None:
        if self._pf is not None:
            self._pf.close()
        self._pf, self._file = None, -1


def open_source(
    dataset: str | os.PathLike[str] | Manifest,
    split: str | None,
    storage_options: Mapping[str, Any] | None,
) -> SplitSource:
    """A prepared dataset (it has a manifest) or Parquet files (a file or a directory)."""
    if isinstance(dataset, Manifest):
        return _from_manifest(resolve(dataset.root, storage_options), dataset, split)
    fs = resolve(dataset, storage_options)
    if fs.exists(fs.join(MANIFEST_NAME)):
        return _from_manifest(fs, _manifest.load(fs), split)
    if any(d.rstrip("/").rsplit("/", 1)[-1].startswith("v-") for d in fs.list_dirs(fs.root)):
        # The layout of a prepared dataset without its manifest: a prepare that never finished.
        raise _manifest.not_prepared(fs)
    if split is not None:
        fs = resolve(f"{os.fspath(dataset).rstrip('/')}/{split}", storage_options)
    return _from_files(fs)


def _from_manifest(fs: Fs, m: Manifest, split: str | None) -> SplitSource:
    if split is None:
        if len(m.splits) != 1:
            raise DataError(f"{m.root}: name a split (splits: {', '.join(m.splits)})", path=m.root)
        split = next(iter(m.splits))
    info = m.split(split)
    files = [fs.join(f.path) for f in info.files]
    groups = [
        Group(i, j, rows) for i, f in enumerate(info.files) for j, rows in enumerate(f.row_groups)
    ]
    where = f"{fs.display(fs.join(MANIFEST_NAME))} split {split!r}"
    schema = _manifest.arrow_schema(m)
    return SplitSource(
        fs,
        files=files,
        groups=groups,
        schema=schema,
        vocabularies=m.vocabularies,
        where=where,
        checked=False,
        identity=(where, m.content_hash),
    )


def _from_files(fs: Fs) -> SplitSource:
    if not fs.exists(fs.root):
        raise DataNotFound(f"{fs.uri}: no such file or directory", path=fs.uri)
    files = fs.parquet_files(fs.root)
    if not files:
        raise DataNotFound(f"{fs.uri}: no Parquet files", path=fs.uri)
    schemas = []
    groups: list[Group] = []
    stamps: list[tuple[str, int, int]] = []
    for i, path in enumerate(files):
        with open_parquet(fs, path) as pf:
            schemas.append(plain_schema(pf.schema_arrow))
            meta = pf.metadata
        if diff := schema_difference(schemas[0], schemas[-1]):
            raise DataError(
                f"{fs.display(path)}: schema differs from {fs.display(files[0])}: {diff}",
                path=fs.display(path),
            )
        groups.extend(Group(i, j, meta.row_group(j).num_rows) for j in range(meta.num_row_groups))
        stamps.append(_stamp(fs, path))
    schema = schemas[0]
    return SplitSource(
        fs,
        files=files,
        groups=groups,
        schema=schema,
        vocabularies={},
        where=fs.uri,
        checked=True,
        identity=(fs.uri, *stamps),
    )


def _stamp(fs: Fs, path: str) -> tuple[str, int, int]:
    """``(path, size, modification time in ns)`` of a local file; the time is 0 elsewhere."""
    if fs.local:
        stat = os.stat(path)
        return path, stat.st_size, stat.st_mtime_ns
    return path, fs.size(path), 0
