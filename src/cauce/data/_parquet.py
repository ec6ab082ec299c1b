"""Opening Parquet files through fsspec, with errors that name the file and the problem."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from cauce.data._fs import Fs
from cauce.data.api import DataError

# What pyarrow raises for unreadable files: ArrowInvalid (bad magic, bad footer, bad pages),
# OSError (ArrowIOError; truncated files), ArrowException for the rest of its tree.
ARROW_ERRORS: tuple[type[BaseException], ...] = (pa.ArrowException, OSError)


def open_parquet(
    fs: Fs,
    path: str,
    *,
    read_dictionary: list[str] | None = None,
    pre_buffer: bool = False,
    buffer_size: int = 0,
) -> pq.ParquetFile:
    """Open ``path`` and read its footer. Corrupt or missing files raise :class:`DataError`.

    ``buffer_size`` > 0 streams each column chunk through a buffer of that size instead of
    reading it whole: memory then no longer grows with the size of row groups.
    """
    try:
        return pq.ParquetFile(
            path,
            filesystem=None if fs.local else fs.arrow_fs,
            read_dictionary=read_dictionary,
            pre_buffer=pre_buffer,
            buffer_size=buffer_size,
        )
    except FileNotFoundError as exc:
        raise DataError(f"{fs.display(path)}: file not found", path=fs.display(path)) from exc
    except ARROW_ERRORS as exc:
        raise DataError(
            f"{fs.display(path)}: not a readable Parquet file ({exc})", path=fs.display(path)
        ) from exc


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` as stored: no writers' metadata (pandas, Spark), no dictionary encoding."""
    fields = [
        f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema
    ]
    return pa.schema([f.remove_metadata() for f in fields]).remove_metadata()


def schema_difference(expected: pa.Schema, actual: pa.Schema) -> str:
    """One line saying how ``actual`` differs from ``expected``; "" when they match."""
    problems = []
    missing = [n for n in expected.names if n not in actual.names]
    extra = [n for n in actual.names if n not in expected.names]
    if missing:
        problems.append("missing column(s) " + ", ".join(missing))
    if extra:
        problems.append("extra column(s) " + ", ".join(extra))
    for f in expected:
        if f.name in actual.names:
            other = actual.field(f.name)
            if not other.type.equals(f.type):
                problems.append(f"column {f.name!r} is {other.type}, expected {f.type}")
    if not problems and expected.names != actual.names:
        problems.append("columns in a different order")
    return "; ".join(problems)


def check_columns(schema: pa.Schema, columns: list[str], where: str) -> None:
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise DataError(
            f"{where}: no column(s) {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(schema.names)})",
            path=where,
        )
