"""Data preparation (Ibis on DuckDB or Spark, written as Parquet with a manifest) and sharded
reading of prepared datasets by the ranks of a training job.

    manifest = cauce.data.prepare("examples/flights/features.py:build", "data/flights")
    for batch in cauce.data.shard("data/flights", "train", batch_size=1024, shuffle=True,
                                  epoch=epoch, format="torch"):
        ...

See docs/data.md.
"""

from cauce.data._context import PrepareContext
from cauce.data._fs import Fs, resolve
from cauce.data._manifest import read_manifest
from cauce.data._prepare import prepare
from cauce.data._shard import Shard, shard
from cauce.data.api import (
    ColumnInfo,
    DataError,
    DataNotFound,
    FileInfo,
    InputInfo,
    Manifest,
    Source,
    SplitInfo,
)

__all__ = [
    "ColumnInfo",
    "DataError",
    "DataNotFound",
    "FileInfo",
    "Fs",
    "InputInfo",
    "Manifest",
    "PrepareContext",
    "Shard",
    "Source",
    "SplitInfo",
    "prepare",
    "read_manifest",
    "resolve",
    "shard",
]
