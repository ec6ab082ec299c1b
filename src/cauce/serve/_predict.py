"""``cauce predict``: score a Parquet dataset with a served model, on DuckDB or on Spark.

The input is a Parquet file or folder, or a prepared dataset and one of its splits
(``split="test"``); local paths and fsspec URIs (``s3://``, ``hdfs://``, ``file://``) alike.
The output folder holds Parquet files with every input column and one column per model output
(1-D outputs as numbers, wider ones as fixed-size lists), and the model's id and lineage in the
files' metadata (key ``cauce:model``, see :func:`scored_model`). An existing output is refused
unless ``overwrite``, and so is an output that is the input, holds it or lies inside it, or
whose parent folder is missing (it is not created); a failed run leaves no output behind.

- ``duckdb``: this process reads the input in batches (DuckDB's Parquet reader, in file order,
  through fsspec for remote stores) and writes ``part-00000.parquet``, with memory bounded by
  ``batch_size``: to a temporary sibling folder renamed into place (local), or to a local file
  uploaded in one piece (object stores).
- ``spark``: see ``_predict_spark.py``.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from cauce._util.files import swap_dir
from cauce._util.text import one_line
from cauce.data import Fs, read_manifest, resolve
from cauce.data.api import MANIFEST_NAME, DataError, DataNotFound
from cauce.serve._scoring import arrow_inputs, model_metadata, with_outputs
from cauce.serve._spec import ModelSpec, read_spec
from cauce.serve._store import local_model_dir
from cauce.serve.api import InvalidInput, OutputExists, ServeError, SettingsError

__all__ = [
    "MAX_BATCH_SIZE",
    "ScoringInput",
    "arrow_inputs",
    "check_batch_size",
    "predict_dataset",
    "scored_model",
    "scoring_input",
]

log = logging.getLogger(__name__)

#: The most rows per model run (``--batch-size``): beyond it, one batch's memory is the
#: problem, not the speed.
MAX_BATCH_SIZE = 1_000_000


@dataclass(frozen=True)
class ScoringInput:
    """What to score: Parquet files (``fs``'s paths), and where they came from."""

    fs: Fs
    files: tuple[str, ...]
    lineage: Mapping[str, Any]

    @property
    def uris(self) -> list[str]:
        return [self.fs.display(f) for f in self.files]


def scoring_input(
    input: str, split: str | None = None, storage_options: Mapping[str, Any] | None = None
) -> ScoringInput:
    """The files of ``input`` (a Parquet file or folder), or of ``split`` of the prepared
    dataset ``input``. Raises :class:`DataNotFound` (exit 2) when there is nothing to read."""
    fs = resolve(input, storage_options)
    if split is not None:
        if fs.fs.isfile(fs.root):
            raise DataNotFound(
                f"--input {input} is a file: --split needs a prepared dataset's folder; leave "
                "--split out to score the file",
                path=input,
            )
        manifest = read_manifest(input, storage_options=storage_options)
        info = manifest.split(split)
        files = tuple(fs.join(f.path) for f in info.files)
        lineage = {
            "dataset": manifest.root,
            "content_hash": manifest.content_hash,
            "split": split,
            "rows": info.rows,
        }
        return ScoringInput(fs, files, lineage)
    if not fs.exists(fs.root):
        raise DataNotFound(f"--input {input}: no such file or directory", path=input)
    if fs.exists(fs.join(MANIFEST_NAME)):
        try:
            splits = ", ".join(read_manifest(input, storage_options=storage_options).splits)
        except DataError:
            splits = ""  # not a manifest of ours: a folder of Parquet files like any other
        if splits:
            raise DataNotFound(
                f"--input {input} is a prepared dataset: name a split with --split "
                f"(splits: {splits})",
                path=input,
            )
    found = fs.parquet_files(fs.root)
    if not found:
        raise DataNotFound(f"--input {input}: holds no Parquet file", path=input)
    return ScoringInput(fs, tuple(found), {"input": input})


def predict_dataset(
    model_dir: str | os.PathLike[str],
    input: str,
    output: str,
    *,
    engine: str = "duckdb",
    spark_master: str | None = None,
    batch_size: int = 8192,
    split: str | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Score ``input`` (Parquet file or folder; with ``split``, a prepared dataset) into the
    folder ``output``; returns the rows scored. Paths may be URIs (``s3://``, ``hdfs://``)."""
    check_batch_size(batch_size)
    if engine not in ("duckdb", "spark"):
        raise SettingsError(f"engine must be duckdb or spark, got {engine!r}")
    source_fs, out = resolve(input, storage_options), resolve(output, storage_options)
    _check_apart(source_fs, out, input, output)
    _check_parent(out, output)
    folder = local_model_dir(os.fspath(model_dir))
    spec = read_spec(folder)
    source = scoring_input(input, split, storage_options)
    if engine == "spark":
        from cauce.serve._predict_spark import predict_spark

        return predict_spark(folder, spec, source, out, spark_master, batch_size, overwrite)
    if out.exists(out.root) and not overwrite:
        raise OutputExists(output)
    return _predict_duckdb(folder, spec, source, out, batch_size)


def check_batch_size(batch_size: int) -> None:
    """Refuse (exit 2) a ``--batch-size`` outside 1 to :data:`MAX_BATCH_SIZE` rows."""
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise SettingsError(f"--batch-size must be 1 to {MAX_BATCH_SIZE:,} rows, got {batch_size}")


def _place(fs: Fs) -> tuple[str, PurePath]:
    """Where ``fs``'s root is, comparable across spellings: the store and a normalized path
    (local: resolved, through symbolic links)."""
    if fs.local:
        return "", Path(fs.root).resolve()
    protocol = fs.fs.protocol if isinstance(fs.fs.protocol, str) else fs.fs.protocol[0]
    return protocol, PurePosixPath(posixpath.normpath("/" + fs.root.lstrip("/")))


def _check_apart(source: Fs, out: Fs, input: str, output: str) -> None:
    """Refuse an output that is the input, holds it (``--overwrite`` would delete it) or lies
    inside it (its files would be scored as input next time)."""
    (store, src), (out_store, dst) = _place(source), _place(out)
    if store != out_store:
        return
    if src == dst:
        problem = f"is --input {input}: writing it would replace the data it scores"
    elif dst in src.parents:
        problem = f"holds --input {input}: writing it would delete the input"
    elif src in dst.parents:
        problem = f"is inside --input {input}: the scores would mix with the data"
    else:
        return
    raise SettingsError(f"--output {output} {problem}; choose an --output outside the input")


def _check_parent(out: Fs, output: str) -> None:
    """Refuse a local output whose parent folder is missing: a typo is not a folder to create."""
    if not out.local:
        return  # object stores have no folders to create
    parent = Path(out.root).parent
    if parent.is_dir():
        return
    if parent.exists():
        raise SettingsError(f"--output {output}: {parent} is not a folder")
    raise SettingsError(
        f"--output {output}: no folder {parent}; create it first (only --output itself is created)"
    )


def _write_local(
    folder: Path, spec: ModelSpec, source: ScoringInput, target: Path, batch_size: int
) -> int:
    """Score every file into ``target/part-00000.parquet`` (DuckDB reads, in file order)."""
    import duckdb
    import pyarrow.parquet as pq

    from cauce.serve._format import load_model

    model = load_model(folder)
    metadata = {
        **model_metadata(spec, str(folder)),
        "cauce:input": json.dumps(dict(source.lineage), sort_keys=True),
    }
    con = duckdb.connect()
    rows = 0
    writer = None
    try:
        if not source.fs.local:
            con.register_filesystem(source.fs.fs)
        reader = con.read_parquet(source.uris).fetch_record_batch(batch_size)
        for batch in reader:
            if batch.num_rows == 0:
                continue
            scored = with_outputs(model, batch, batch_size)
            if writer is None:
                schema = scored.schema.with_metadata(metadata)
                writer = pq.ParquetWriter(str(target / "part-00000.parquet"), schema)
            writer.write_batch(scored)
            rows += batch.num_rows
    except duckdb.Error as exc:
        raise _unreadable(source, exc) from exc
    finally:
        if writer is not None:
            writer.close()
        con.close()
    return rows


def _unreadable(source: ScoringInput, exc: Exception) -> ServeError | DataError:
    """What DuckDB's error reading the input means: a file that is not Parquet (exit 2), or
    files it cannot read (together)."""
    import duckdb

    detail = one_line(exc) or type(exc).__name__
    detail = re.sub(r"^[A-Za-z ]*Error: ", "", detail)
    given = source.lineage.get("input") or source.lineage.get("dataset")
    if isinstance(exc, duckdb.InvalidInputException):
        named = re.search(r"file '([^']+)'", detail, re.IGNORECASE)
        if named and ("magic bytes" in detail or "too small" in detail):
            file = named.group(1)
            where = f"--input {given}" if len(source.files) == 1 else f"{file} in --input {given}"
            return InvalidInput(f"{where} is not a Parquet file ({detail})")
        return InvalidInput(f"--input {given}: {detail}")
    return DataError(f"--input {given}: cannot read it ({detail})", path=str(given))


def _predict_duckdb(
    folder: Path, spec: ModelSpec, source: ScoringInput, out: Fs, batch_size: int
) -> int:
    if out.local:
        final = Path(out.root)
        # A folder like any other (the umask's mode, where mkdtemp gives 0700), hidden until
        # it is complete and renamed into place.
        tmp = final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}")
        try:
            tmp.mkdir()
        except OSError as exc:
            raise SettingsError(
                f"cannot write --output {out.uri}: cannot create a folder in {final.parent} "
                f"({exc.strerror or exc})"
            ) from None
    else:
        tmp = Path(tempfile.mkdtemp(prefix="cauce-predict-"))
    try:
        rows = _write_local(folder, spec, source, tmp, batch_size)
        if out.local:
            swap_dir(tmp, final)
        else:
            out.remove_tree(out.root)
            out.makedirs(out.root)
            # One upload of the whole file: an object store shows all of it or nothing.
            out.fs.put_file(str(tmp / "part-00000.parquet"), out.join("part-00000.parquet"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("scored %d rows of %s into %s", rows, source.fs.uri, out.uri)
    return rows


def scored_model(path: str) -> dict[str, Any]:
    """The model id and lineage that ``cauce predict`` wrote into a scored Parquet file (either
    engine): ``{"id", "name", "version", "sha256", "path", "lineage"}``."""
    import pyarrow.parquet as pq

    fs = resolve(path)
    files = fs.parquet_files(fs.root)
    if not files:
        raise DataNotFound(f"{path}: holds no Parquet file", path=path)
    with fs.fs.open(files[0], "rb") as f:
        meta = pq.ParquetFile(f).metadata.metadata or {}
    if b"cauce:model" in meta:
        found: dict[str, Any] = json.loads(meta[b"cauce:model"])
        return found
    spark = json.loads(meta.get(b"org.apache.spark.sql.parquet.row.metadata", b"{}"))
    for field in spark.get("fields", []):
        if "cauce:model" in field.get("metadata", {}):
            found = json.loads(field["metadata"]["cauce:model"])
            return found
    raise DataError(f"{path}: no cauce:model metadata (not written by cauce predict)", path=path)
