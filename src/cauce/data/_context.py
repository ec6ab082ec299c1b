"""What a preparation function receives: inputs, the engine's Ibis backend, SQL, categoricals."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pcsv

from cauce._util.text import one_line
from cauce.data._errors import os_reason
from cauce.data._fs import resolve
from cauce.data.api import DataError, DataNotFound, Engine, InputInfo

if TYPE_CHECKING:
    import ibis.expr.types as ir

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PrepareContext:
    """Handed to a preparation function: ``build(ctx) -> {"train": table, ...}``.

    Inputs read through the context are hashed: with the function's code they make the cache key
    of a prepare, so an unchanged re-run does no work. Read every input through it.

    ``ctx.con`` is the engine's Ibis backend (DuckDB or PySpark) for anything else Ibis offers.
    """

    def __init__(self, engine: Engine, storage_options: Mapping[str, Any] | None = None) -> None:
        self._engine = engine
        self._storage_options = dict(storage_options or {})
        self.inputs: list[InputInfo] = []
        self.categorical_columns: list[str] | None = None

    @property
    def engine(self) -> str:
        """``"duckdb"`` or ``"spark"``."""
        return self._engine.name

    @property
    def con(self) -> Any:
        """The Ibis backend the splits run on."""
        return self._engine.con

    def read_csv(
        self,
        uri: str | os.PathLike[str],
        *,
        name: str | None = None,
        delimiter: str = ",",
        null_values: Sequence[str] = ("", "NA", "NULL", "null", "NaN", "nan", "N/A"),
        column_types: Mapping[str, pa.DataType] | None = None,
    ) -> ir.Table:
        """Parse a CSV file (local or URI, compression by extension) with pyarrow.

        Parsing happens here, not in the engine, so DuckDB and Spark see the same types. Suited
        to inputs that fit in memory; give large inputs as Parquet (:meth:`read_parquet`).
        Chained fsspec URLs work too: ``zip://flights.csv::/data/flights.csv.zip``.
        """
        uri = canonical(uri)
        name = self._name(name, uri)
        data = read_uri(uri, self._storage_options)
        try:
            table = pcsv.read_csv(
                io.BytesIO(data),
                parse_options=pcsv.ParseOptions(delimiter=delimiter),
                convert_options=pcsv.ConvertOptions(
                    null_values=list(null_values),
                    strings_can_be_null=True,
                    column_types=dict(column_types or {}),
                ),
            )
            table.schema.names  # noqa: B018 (pyarrow keeps header bytes that are not UTF-8)
        except pa.ArrowInvalid as exc:
            raise DataError(f"{uri}: cannot parse as CSV ({one_line(exc)})", path=uri) from exc
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{uri}: cannot parse as CSV (its first line has column names that are not "
                "UTF-8 text)",
                path=uri,
            ) from exc
        digest = hashlib.sha256(data).hexdigest()
        self.inputs.append(InputInfo(name, "csv", uri, digest, table.num_rows))
        return self._register(name, table, uri=uri)

    def read_parquet(self, uri: str | os.PathLike[str], *, name: str | None = None) -> ir.Table:
        """Parquet file(s) at ``uri``, read by the engine itself (for inputs of any size)."""
        uri = canonical(uri)
        name = self._name(name, uri)
        digest = hash_input("parquet", uri, self._storage_options)
        self.inputs.append(InputInfo(name, "parquet", uri, digest))
        return self._engine.read_parquet(name, uri)

    def table(self, name: str, data: Any) -> ir.Table:
        """An in-memory table (``pyarrow.Table`` or ``pandas.DataFrame``) under ``name``.

        Its content is hashed into the cache key; checking the cache then needs the function to
        run again (it does not for inputs read from files).
        """
        self._name(name, "")
        if not isinstance(data, pa.Table):
            try:
                data = pa.Table.from_pandas(data, preserve_index=False)
            except (TypeError, AttributeError, pa.ArrowException) as exc:
                raise DataError(
                    f"input {name!r}: expected a pyarrow.Table or pandas.DataFrame, "
                    f"got {type(data).__name__}"
                ) from exc
        self.inputs.append(InputInfo(name, "memory", "", _hash_table(data), data.num_rows))
        return self._register(name, data)

    def sql(self, query: str, *, dialect: str | None = None) -> ir.Table:
        """A table from SQL over the inputs registered so far, by their names.

        ``dialect`` is the SQL dialect the query is written in (``"duckdb"``, ``"spark"``...);
        Ibis translates it for the engine. None means the engine's own.
        """
        import sqlglot

        if dialect is not None:
            try:
                sqlglot.Dialect.get_or_raise(dialect)
            except ValueError as exc:
                raise DataError(f"ctx.sql: {one_line(exc)}") from exc
        errors: tuple[type[Exception], ...] = (*self._engine.errors, sqlglot.errors.SqlglotError)
        try:
            if dialect is None:
                return self.con.sql(query)
            return self.con.sql(query, dialect=dialect)
        except errors as exc:
            raise DataError(
                f"ctx.sql: your SQL does not run on {self.engine}: {one_line(exc)} "
                f"(query: {one_line(query, 120)})"
            ) from exc

    def _register(self, name: str, table: pa.Table, *, uri: str = "") -> ir.Table:
        try:
            return self._engine.register(name, table)
        except self._engine.errors as exc:  # e.g. column names that are not valid UTF-8
            raise DataError(
                f"{uri or f'input {name!r}'}: {self.engine} cannot take it as a table: "
                f"{one_line(exc)}",
                path=uri,
            ) from exc

    def categorical(self, *columns: str) -> None:
        """Declare categorical output columns: the manifest gets their vocabularies.

        Without a declaration every string column is categorical.
        """
        self.categorical_columns = [*(self.categorical_columns or []), *columns]

    def _name(self, name: str | None, uri: str) -> str:
        if name is None:
            base = uri.rstrip("/").rsplit("/", 1)[-1].split("::")[0]
            name = re.sub(r"\W", "_", base.split(".")[0])
        if not _NAME_RE.match(name):
            raise DataError(f"input name {name!r} must be an identifier (letters, digits, _)")
        if any(i.name == name for i in self.inputs):
            raise DataError(f"input name {name!r} is used twice; pass name= to tell them apart")
        return name


def canonical(uri: str | os.PathLike[str]) -> str:
    """Local paths made absolute, so a cache check from another directory finds them."""
    text = os.fspath(uri)
    if "://" in text or "::" in text:
        return text
    return os.path.abspath(text)


def read_uri(uri: str, storage_options: Mapping[str, Any]) -> bytes:
    import fsspec

    try:
        with fsspec.open(uri, "rb", compression="infer", **storage_options) as f:
            data: bytes = f.read()
            return data
    except FileNotFoundError as exc:
        raise DataNotFound(f"{uri}: input not found", path=uri) from exc
    except IsADirectoryError as exc:
        raise DataError(
            f"{uri}: is a folder, not a file (read_csv reads one file; read_parquet reads "
            "a folder of Parquet files)",
            path=uri,
        ) from exc
    except OSError as exc:
        raise DataError(f"{uri}: cannot read it: {os_reason(exc)}", path=uri) from exc


def hash_input(kind: str, uri: str, storage_options: Mapping[str, Any]) -> str:
    """The content hash of a file input, as :class:`PrepareContext` records it."""
    if kind == "csv":
        return hashlib.sha256(read_uri(uri, storage_options)).hexdigest()
    if kind == "parquet":
        fs = resolve(uri, storage_options)
        files = fs.parquet_files(fs.root)
        if not files:
            raise DataNotFound(f"{uri}: no Parquet files", path=uri)
        digest = hashlib.sha256()
        for path in files:
            digest.update(f"{path[len(fs.root) :]}\0{fs.sha256(path)}\n".encode())
        return digest.hexdigest()
    raise ValueError(f"cannot re-hash an input of kind {kind!r}")


def _hash_table(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()
