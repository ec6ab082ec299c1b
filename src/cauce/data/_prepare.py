"""``prepare``: run a user's preparation function on an engine, write Parquet, commit a manifest."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from cauce.data import _manifest
from cauce.data._context import PrepareContext, hash_input
from cauce.data._errors import os_reason
from cauce.data._fs import Fs, resolve
from cauce.data._loading import BuildFn, hash_code, load_function
from cauce.data.api import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    DataError,
    Engine,
    InputInfo,
    Manifest,
    Progress,
    Source,
)
from cauce.errors import CauceError

log = logging.getLogger(__name__)

#: engine name -> (module, class, the extra that brings its packages)
ENGINES: dict[str, tuple[str, str, str]] = {
    "duckdb": ("cauce.data._duckdb", "DuckDBEngine", "data"),
    "spark": ("cauce.data._spark", "SparkEngine", "data-spark"),
}
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_VERSION_PREFIX = "v-"


def prepare(
    fn: BuildFn | str,
    out: str | os.PathLike[str],
    *,
    engine: str = "duckdb",
    spark_master: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    rows_per_file: int = 1_000_000,
    row_group_rows: int = 131_072,
    compression: str = "zstd",
    storage_options: Mapping[str, Any] | None = None,
) -> Manifest:
    """Run ``fn(ctx)`` on ``engine`` and write its splits as a prepared dataset at ``out``.

    ``fn`` is a function or ``"package.module:function"`` / ``"path/to/file.py:function"``; it
    returns ``{split_name: ibis_table}``. When ``out`` already holds a dataset made by the same
    code from the same inputs with the same options, nothing runs and its manifest is returned
    (``force=True`` runs anyway). The engine takes no part in the cache key: a dataset made on
    DuckDB is a cache hit for Spark. The new manifest replaces the old one atomically, last.
    """
    for option, value in (("rows_per_file", rows_per_file), ("row_group_rows", row_group_rows)):
        if value < 1:
            raise DataError(f"{option} must be >= 1, got {value}")
    if not os.fspath(out):  # "" would be the current directory
        raise DataError("out must name the dataset's folder (a path or URI), got ''")
    func, label = load_function(fn)
    code_hash, code_files = hash_code(func)
    options = {
        "rows_per_file": rows_per_file,
        "row_group_rows": row_group_rows,
        "compression": compression,
    }
    fs = resolve(out, storage_options)
    old = _previous(fs)
    if (
        old is not None
        and not force
        and _unchanged_inputs(
            old,
            func=func,
            code_hash=code_hash,
            options=options,
            fs=fs,
            storage_options=storage_options or {},
        )
    ):
        log.info("%s: cache hit (key %s), nothing to do", fs.uri, old.source.cache_key[:12])
        return old

    eng = make_engine(engine, spark_master, storage_options)
    version = ""
    try:
        ctx = PrepareContext(eng, storage_options)
        splits = _call(func, label, ctx)
        key = cache_key(func.__qualname__, code_hash, ctx.inputs, options)
        if old is not None and not force and old.source.cache_key == key and _files_exist(fs, old):
            log.info("%s: cache hit (key %s), nothing to do", fs.uri, key[:12])
            return old
        version = f"{_VERSION_PREFIX}{key[:12]}-{uuid.uuid4().hex[:8]}"
        with _writing(fs):
            fs.makedirs(fs.join(version))
        for split, expr in splits.items():
            log.info("%s: writing split %s with %s", fs.uri, split, eng.name)
            eng.write(
                split,
                expr,
                fs.display(fs.join(version, split)),  # a URI: engines resolve it themselves
                rows_per_file=rows_per_file,
                row_group_rows=row_group_rows,
                compression=compression,
                progress=progress,
            )
        with _writing(fs):
            fs.fsync_tree(fs.join(version))
        source = Source(
            function=label,
            code_hash=code_hash,
            code_files=tuple(code_files),
            inputs=tuple(ctx.inputs),
            engine=eng.name,
            engine_version=eng.version,
            options=options,
            cache_key=key,
        )
        manifest = _manifest.describe(fs, version, list(splits), ctx.categorical_columns, source)
        with _writing(fs):
            fs.write_atomic(fs.join(MANIFEST_NAME), _manifest.to_json(manifest))
    except Exception:
        if version:  # leave no orphan behind on an ordinary failure (a kill leaves one: see below)
            _remove_quietly(fs, fs.join(version))
        raise
    finally:
        eng.close()
    # Only now is the old version unreferenced. Directories of killed runs go too; this assumes
    # one prepare at a time writes to ``out``.
    for path in fs.list_dirs(fs.root):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(_VERSION_PREFIX) and name != version:
            _remove_quietly(fs, path)
    log.info(
        "%s: prepared %s", fs.uri, ", ".join(f"{k} {v} rows" for k, v in manifest.rows.items())
    )
    return manifest


def cache_key(
    qualname: str, code_hash: str, inputs: list[InputInfo], options: Mapping[str, Any]
) -> str:
    raw = {
        "format_version": FORMAT_VERSION,
        "function": qualname,
        "code": code_hash,
        "inputs": [[i.name, i.kind, i.sha256] for i in inputs],
        "options": dict(sorted(options.items())),
    }
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()


def make_engine(
    name: str, spark_master: str | None, storage_options: Mapping[str, Any] | None = None
) -> Engine:
    """The engine ``name``; ``storage_options`` are the fsspec options it opens the inputs
    it reads and the folders it writes with (the executors' too, on Spark)."""
    try:
        module_name, cls_name, extra = ENGINES[name]
    except KeyError:
        raise DataError(f"unknown engine {name!r} (engines: {', '.join(ENGINES)})") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataError(
            f"engine {name!r} needs {exc.name or 'packages that are missing'}: "
            f"pip install 'cauce[{extra}]'"
        ) from exc
    engine: Engine = getattr(module, cls_name)(master=spark_master, storage_options=storage_options)
    return engine


def _call(func: BuildFn, label: str, ctx: PrepareContext) -> dict[str, Any]:
    import ibis.expr.types as ir

    try:
        result = func(ctx)
    except CauceError:
        raise  # cauce's own (an input not found, bad SQL) says what and where already
    except Exception as exc:
        exc.add_note(f"in {label}, the prepare function: nothing was written")
        raise
    if not isinstance(result, Mapping) or not result:
        raise DataError(
            f"{label} must return a non-empty dict of split name -> Ibis table, "
            f"got {type(result).__name__}"
        )
    for split, expr in result.items():
        if not isinstance(split, str) or not _SPLIT_RE.match(split):
            raise DataError(f"{label}: split name {split!r} must be letters, digits, _ . -")
        if not isinstance(expr, ir.Table):
            raise DataError(
                f"{label}: split {split!r} must be an Ibis table, got {type(expr).__name__}"
            )
    return dict(result)


def _previous(fs: Fs) -> Manifest | None:
    if not fs.exists(fs.join(MANIFEST_NAME)):
        return None
    try:
        return _manifest.load(fs)
    except DataError as exc:
        log.warning("ignoring the existing manifest: %s", exc)
        return None


def _unchanged_inputs(
    old: Manifest,
    *,
    func: BuildFn,
    code_hash: str,
    options: Mapping[str, Any],
    fs: Fs,
    storage_options: Mapping[str, Any],
) -> bool:
    """The cache check that needs no engine: same code, same options, same file inputs."""
    src = old.source
    if src.code_hash != code_hash or any(i.kind == "memory" for i in src.inputs):
        return False
    try:
        fresh = [
            InputInfo(i.name, i.kind, i.uri, hash_input(i.kind, i.uri, storage_options))
            for i in src.inputs
        ]
    except (DataError, OSError) as exc:
        log.info("cannot re-hash the previous inputs (%s); running the function", exc)
        return False
    key = cache_key(func.__qualname__, code_hash, fresh, options)
    return key == src.cache_key and _files_exist(fs, old)


def _files_exist(fs: Fs, m: Manifest) -> bool:
    return all(fs.exists(fs.join(f.path)) for s in m.splits.values() for f in s.files)


@contextlib.contextmanager
def _writing(fs: Fs) -> Iterator[None]:
    """OSErrors of writing the output (a file where the folder should be, no permission, a full
    disk) as a :class:`DataError` naming the output."""
    try:
        yield
    except OSError as exc:
        if fs.local and os.path.isfile(fs.root):
            reason = "it is a file, not a folder"
        else:
            reason = os_reason(exc)
        raise DataError(f"cannot write to {fs.uri}: {reason}", path=fs.uri) from exc


def _remove_quietly(fs: Fs, path: str) -> None:
    try:
        fs.remove_tree(path)
    except OSError as exc:
        log.warning("could not remove %s: %s", fs.display(path), exc)
