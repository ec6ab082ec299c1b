"""The data layer's contract: the manifest of a prepared dataset, the engine interface, errors.

A prepared dataset is a directory (local path or fsspec URI) holding one file that marks it
complete, ``_manifest.json``, and the Parquet files it names, one sub-directory per split::

    out/_manifest.json
    out/v-<key>-<nonce>/train/part-00000.parquet
    out/v-<key>-<nonce>/validation/part-00000.parquet

The manifest is written last and atomically; data files that no manifest names are leftovers of
an interrupted run and are never read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from cauce.errors import DataError

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "ColumnInfo",
    "DataError",
    "DataNotFound",
    "Engine",
    "FileInfo",
    "InputInfo",
    "Manifest",
    "Progress",
    "Source",
    "SplitInfo",
]

#: The file that marks a prepared dataset complete.
MANIFEST_NAME = "_manifest.json"

#: Manifest layout version; readers refuse newer ones.
FORMAT_VERSION = 1

#: ``progress(split, rows_written_so_far)``, called as a prepare writes.
Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class ColumnInfo:
    """One column of the dataset's schema."""

    name: str
    type: str  # the Arrow type, as Arrow prints it: "int64", "double", "string"
    nullable: bool = True


@dataclass(frozen=True)
class FileInfo:
    """One Parquet file of a split. ``path`` is relative to the dataset root."""

    path: str
    rows: int
    row_groups: tuple[int, ...]  # rows in each row group, in file order
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SplitInfo:
    """One split (``train``, ``validation``...): its files in reading order."""

    name: str
    rows: int
    files: tuple[FileInfo, ...]

    @property
    def row_groups(self) -> int:
        return sum(len(f.row_groups) for f in self.files)


@dataclass(frozen=True)
class InputInfo:
    """One input a prepare read: ``kind`` is ``csv``, ``parquet`` or ``memory``."""

    name: str
    kind: str
    uri: str  # "" for in-memory inputs
    sha256: str
    rows: int | None = None


@dataclass(frozen=True)
class Source:
    """Where a dataset came from: the function, its code, its inputs and the engine that ran it."""

    function: str  # "package.module:build" or "path/to/file.py:build"
    code_hash: str
    code_files: tuple[str, ...]
    inputs: tuple[InputInfo, ...]
    engine: str
    engine_version: str
    options: Mapping[str, Any]
    cache_key: str


@dataclass(frozen=True)
class Manifest:
    """What a prepared dataset holds. Read it with :func:`cauce.data.read_manifest`.

    ``content_hash`` is the SHA-256 of the schema and of every data file's bytes (in split and
    file order); two datasets with the same hash hold the same files. ``vocabularies`` maps each
    categorical column to its sorted distinct values in the train split (nulls left out).
    """

    root: str  # the dataset's URI or absolute path, as it was read
    schema: tuple[ColumnInfo, ...]
    splits: Mapping[str, SplitInfo]
    vocabularies: Mapping[str, tuple[str | int, ...]]
    content_hash: str
    source: Source
    created_at: str
    arrow_schema: bytes = field(default=b"", repr=False)  # serialized Arrow schema, exact types
    format_version: int = FORMAT_VERSION

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.schema)

    @property
    def rows(self) -> dict[str, int]:
        return {name: split.rows for name, split in self.splits.items()}

    def split(self, name: str) -> SplitInfo:
        try:
            return self.splits[name]
        except KeyError:
            known = ", ".join(self.splits) or "none"
            raise DataNotFound(
                f"{self.root}: no split {name!r} (splits: {known})", path=self.root
            ) from None


class DataNotFound(DataError):
    """An input named by the user (a file, a folder, a prepared dataset or its split) does not
    exist or holds no data: refused before anything ran, exit 2 like every such refusal of
    ``cauce prepare``, ``cauce predict`` and ``cauce serve``."""

    exit_code = 2


class Engine(Protocol):
    """A preparation engine: gives the user's function an Ibis backend and writes its results.

    One instance serves one prepare, from one thread. ``write`` raises :class:`DataError` for
    problems in the data or the expression; ``close`` releases what the engine started (it does
    not stop a Spark session it did not create).
    """

    name: str
    version: str
    #: The engine's own exceptions for SQL or data it cannot take (a syntax error, an unknown
    #: column, text that is not UTF-8); the context reports them as :class:`DataError`.
    errors: tuple[type[Exception], ...]

    @property
    def con(self) -> Any:  # the Ibis backend
        ...

    def register(self, name: str, table: pa.Table) -> ir.Table:
        """Make an in-memory Arrow table available to expressions and SQL under ``name``."""
        ...

    def read_parquet(self, name: str, uri: str) -> ir.Table:
        """Make Parquet files at ``uri`` available under ``name``, read by the engine itself."""
        ...

    def write(
        self,
        split: str,
        expr: ir.Table,
        dest: str,
        *,
        rows_per_file: int,
        row_group_rows: int,
        compression: str,
        progress: Progress | None,
    ) -> None:
        """Run ``expr`` and write its rows as Parquet files into the new directory ``dest``."""
        ...

    def close(self) -> None: ...
