"""Preparing to and reading from a real S3 API: moto's server on 127.0.0.1, through s3fs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cauce.data import prepare, read_manifest, shard
from data_fixtures import ids, write_csv, write_files, write_module
from s3_fixtures import endpoint_fixture, s3_store_fixture  # noqa: F401 - fixtures

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto")
pytest.importorskip("ibis")

BUCKET = "cauce-data"


@pytest.fixture
def s3(s3_store: object) -> object:
    """The store, with the bucket of these tests."""
    if not s3_store.exists(BUCKET):  # type: ignore[attr-defined]
        s3_store.mkdir(BUCKET)  # type: ignore[attr-defined]
    return s3_store


def test_prepare_to_s3_and_shard_from_it(s3: object, tmp_path: Path) -> None:
    fs = s3
    csv = write_csv(tmp_path / "src.csv", 400)
    fs.put(str(csv), f"{BUCKET}/in/src.csv")  # type: ignore[attr-defined]
    target = write_module(tmp_path / "code", f"s3://{BUCKET}/in/src.csv")  # type: ignore[arg-type]
    out = f"s3://{BUCKET}/prepared/small"
    m = prepare(target, out, row_group_rows=64)
    assert m.rows == {"train": 300, "test": 100}
    assert m.source.inputs[0].uri == f"s3://{BUCKET}/in/src.csv"
    assert read_manifest(out).content_hash == m.content_hash
    parts = [ids(shard(out, "train", batch_size=50, rank=r, world_size=3)) for r in range(3)]
    union = np.concatenate(parts)
    assert np.array_equal(np.sort(union), np.array([i for i in range(400) if i % 4]))
    again = prepare(target, out, row_group_rows=64)  # a cache hit, checked on S3
    assert again.created_at == m.created_at
    names = fs.ls(f"{BUCKET}/prepared/small")  # type: ignore[attr-defined]
    assert sorted(n.rsplit("/", 1)[-1][:2] for n in names) == ["_m", "v-"]


def test_shard_plain_parquet_on_s3(s3: object, tmp_path: Path) -> None:
    write_files(tmp_path / "ds")
    s3.put(str(tmp_path / "ds"), f"{BUCKET}/plain/", recursive=True)  # type: ignore[attr-defined]
    uri = f"s3://{BUCKET}/plain/ds"
    for shuffle in (False, True):
        got = ids(shard(uri, batch_size=128, shuffle=shuffle, format="numpy"))
        assert np.array_equal(np.sort(got), np.arange(1000))


def test_storage_options_instead_of_environment(
    endpoint: str, s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_files(tmp_path / "ds", [(5, 5)])
    s3.put(str(tmp_path / "ds"), f"{BUCKET}/opts/", recursive=True)  # type: ignore[attr-defined]
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    s3fs.S3FileSystem.clear_instance_cache()
    options = {"client_kwargs": {"endpoint_url": endpoint}}
    got = ids(shard(f"s3://{BUCKET}/opts/ds", storage_options=options))
    assert got.tolist() == list(range(10))
    # prepare: the input read, the parts written and the manifest, all through the options
    csv = write_csv(tmp_path / "src.csv", 40)
    s3.put(str(csv), f"{BUCKET}/opts/src.csv")  # type: ignore[attr-defined]
    target = write_module(tmp_path / "code", f"s3://{BUCKET}/opts/src.csv")  # type: ignore[arg-type]
    out = f"s3://{BUCKET}/opts/prepared"
    m = prepare(target, out, storage_options=options)
    assert m.rows == {"train": 30, "test": 10}
    assert ids(shard(out, "test", storage_options=options)).tolist() == list(range(0, 40, 4))
    assert os.environ.get("AWS_ENDPOINT_URL") is None


def test_pyarrow_reads_natively_when_it_can(endpoint: str, s3: object, tmp_path: Path) -> None:
    import pyarrow.fs as pafs

    from cauce.data._fs import resolve

    write_files(tmp_path / "ds", [(5, 5)])
    s3.put(str(tmp_path / "ds"), f"{BUCKET}/native/", recursive=True)  # type: ignore[attr-defined]
    uri = f"s3://{BUCKET}/native/ds"
    # Settings in the environment: pyarrow's own S3 client reads it.
    assert isinstance(resolve(uri).arrow_fs, pafs.S3FileSystem)
    assert isinstance(resolve(f"s3a://{BUCKET}/native/ds").arrow_fs, pafs.S3FileSystem)
    assert ids(shard(uri)).tolist() == list(range(10))
    # Settings only fsspec understands: pyarrow goes through fsspec.
    options = {"client_kwargs": {"endpoint_url": endpoint}}
    assert isinstance(resolve(uri, options).arrow_fs, pafs.PyFileSystem)
    # Local paths: pyarrow's local filesystem; a store pyarrow lacks: fsspec.
    assert isinstance(resolve(str(tmp_path)).arrow_fs, pafs.LocalFileSystem)
    assert isinstance(resolve("memory://x/y").arrow_fs, pafs.PyFileSystem)
