"""``cauce predict``: score a Parquet dataset with a served model, on DuckDB or on Spark.

The input is a Parquet file or folder, or a prepared dataset and one of its splits
(``split="test"``); local paths and fsspec URIs (``s3://``, ``hdfs://``, ``file://``) alike.
The output folder holds Parquet files with every input column and one column per model output
(1-D outputs as numbers, wider ones as fixed-size lists), and the model's id and lineage in the
files' metadata (key ``cauce:model``, see :func:`scored_model`). An existing output is refused
unless ``overwrite``; a failed run leaves no output behind.

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
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cauce._util.files import swap_dir
from cauce.data import Fs, read_manifest, resolve
from cauce.data.api import MANIFEST_NAME, DataError, DataNotFound
from cauce.serve._scoring import arrow_inputs, model_metadata, with_outputs
from cauce.serve._spec import ModelSpec, read_spec
from cauce.serve._store import local_model_dir
from cauce.serve.api import OutputExists, ServeError

__all__ = ["ScoringInput", "arrow_inputs", "predict_dataset", "scored_model", "scoring_input"]

log = logging.getLogger(__name__)


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
    if batch_size < 1:
        raise ServeError(f"batch_size must be >= 1, got {batch_size}")
    if engine not in ("duckdb", "spark"):
        raise ServeError(f"engine must be duckdb or spark, got {engine!r}")
    folder = local_model_dir(os.fspath(model_dir))
    spec = read_spec(folder)
    source = scoring_input(input, split, storage_options)
    out = resolve(output, storage_options)
    if engine == "spark":
        from cauce.serve._predict_spark import predict_spark

        return predict_spark(folder, spec, source, out, spark_master, batch_size, overwrite)
    if out.exists(out.root) and not overwrite:
        raise OutputExists(output)
    return _predict_duckdb(folder, spec, source, out, batch_size)


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
    try:
        if not source.fs.local:
            con.register_filesystem(source.fs.fs)
        reader = con.read_parquet(source.uris).fetch_record_batch(batch_size)
        writer = None
        try:
            for batch in reader:
                if batch.num_rows == 0:
                    continue
                scored = with_outputs(model, batch, batch_size)
                if writer is None:
                    schema = scored.schema.with_metadata(metadata)
                    writer = pq.ParquetWriter(str(target / "part-00000.parquet"), schema)
                writer.write_batch(scored)
                rows += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
    finally:
        con.close()
    return rows


def _predict_duckdb(
    folder: Path, spec: ModelSpec, source: ScoringInput, out: Fs, batch_size: int
) -> int:
    if out.local:
        final = Path(out.root)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
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
