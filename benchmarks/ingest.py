"""Ingest speed: rows/s from a Parquet dataset to PyTorch tensors, cauce against its peers.

A dataset of ``--rows`` rows (default 2M) x 14 columns (10 numeric, 4 categorical strings) is
made by ``cauce.data.prepare`` on DuckDB in a temporary directory. Each side then reads all of
it, once per run, in batches of ``--batch-size`` rows, into a dict of PyTorch tensors
(categoricals as int64 codes):

- **cauce**: ``cauce.data.shard(..., format="torch")`` (one rank, no shuffle; also reported:
  with ``shuffle=True``, not part of a ratio);
- **pyarrow**: a hand-written loop, the best a user would write: ``ParquetFile.iter_batches``
  with the categoricals read as dictionaries, codes through ``pyarrow.compute.index_in`` on the
  dictionary, ``torch.from_numpy`` on every column;
- **decode_only** (for scale, not a peer): Arrow decoding the files in batches of 65,536 rows,
  categoricals as dictionaries, no conversion at all: the floor under any loader;
- **petastorm**: ``make_batch_reader`` (its default thread pool), to NumPy (one batch per row
  group; no torch conversion, no categorical codes, so its figure flatters it);
- **hf**: Hugging Face ``datasets``: ``Dataset.from_parquet`` (its Arrow cache is built before
  the clock starts), then ``with_format("torch").iter(batch_size)``;
- **hf_streaming**: the same library without the cache: ``load_dataset("parquet",
  data_files=..., streaming=True)``, ``with_format("torch").iter(batch_size)`` (in both, the
  categoricals stay lists of strings: no codes, so these figures flatter them);
- **ray**: Ray Data: ``ray.data.read_parquet``, categoricals to codes with ``map_batches`` (the
  same ``pyarrow.compute.index_in`` as the hand-written loop), then
  ``iter_torch_batches(batch_size)``; ``ray.init`` (a local Ray instance) and a first small
  dataset (which starts its worker processes) are done before the clock starts.

With ``--s3``, the dataset is also copied to a bucket of moto's S3 server (in this process,
on 127.0.0.1) and read from ``s3://``: **cauce_s3** (pyarrow's native S3 client, credentials and
endpoint from the environment), **cauce_s3_fsspec** (the same read given ``storage_options``,
so through s3fs wrapped for pyarrow: what cauce did before it tried pyarrow's own
filesystems) and **pyarrow_s3** (the hand-written loop on ``pyarrow.fs.S3FileSystem``);
``ratio_s3`` is cauce_s3 / pyarrow_s3 and ``ratio_s3_native`` cauce_s3 / cauce_s3_fsspec. A
local server measures the clients, not a network.

Petastorm needs an old pyarrow (< 13) and NumPy (< 2), so it cannot live in this environment:
give ``--petastorm-python`` a Python that has it (see the skip message); likewise
``--hf-python``, when ``datasets`` is not importable here, and ``--ray-python`` for Ray (each
defaults to ``CAUCE_BENCH_PETASTORM``, ``CAUCE_BENCH_HF``, ``CAUCE_BENCH_RAY``, which
``scripts/bench.sh`` sets to the environments it builds). A peer that cannot run (it does not
import, or its first run fails) is skipped, with the reason printed. After ``--warmup`` rounds
(default 1), ``--runs`` rounds (default 5) each run every side once, in turn. Figures are
rows/s (higher is faster); a ratio is median rows/s of cauce / median rows/s of the peer, so
above 1 means cauce is faster. The last line printed is one JSON object: ``ratio`` is cauce /
pyarrow, ``ratio_petastorm`` cauce / petastorm, ``ratio_hf``, ``ratio_hf_streaming`` and
``ratio_ray`` likewise (null when not measured), with the machine's load
(``benchmarks/_machine.py``).

    bash scripts/bench.sh ingest      # with every peer, each in its environment
    .venv/bin/python benchmarks/ingest.py --rows 20000 --runs 1      # a smoke test
    .venv/bin/python benchmarks/ingest.py --quick    # 200,000 rows, 1 run, no warm-up
    .venv/bin/python benchmarks/ingest.py --rows 1000000 --s3         # and from s3://
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _machine import Machine, can_import, quick_default

NUMERIC = 10
CATEGORICAL = {"cat_a": 7, "cat_b": 50, "cat_c": 300, "cat_d": 2000}  # name -> distinct values
PETASTORM_VENV = "bash scripts/bench.sh ingest (it builds .bench-envs/petastorm)"
#: The peers that run in their own interpreter: side -> (module it needs, how to get it).
SUBPROCESS_PEERS = {
    "petastorm": ("petastorm", PETASTORM_VENV),
    "hf": ("datasets", "pip install datasets"),
    "hf_streaming": ("datasets", "pip install datasets"),
    "ray": ("ray.data", "bash scripts/bench.sh ingest (it builds .bench-envs/ray)"),
}


def build(ctx: Any) -> dict[str, Any]:
    """The benchmark's dataset, deterministic: DuckDB's hash of the row number."""
    rows = int(os.environ["CAUCE_BENCH_ROWS"])
    numeric = [
        f"CAST(hash(i * {k + 1}) % 1000003 AS DOUBLE) / 1000003 AS x{k}"
        if k % 3
        else f"CAST(hash(i + {k}) % 100000 AS BIGINT) AS x{k}"
        for k in range(NUMERIC)
    ]
    categorical = [
        f"'v' || CAST(hash(i * 31 + {n}) % {n} AS VARCHAR) AS {name}"
        for name, n in CATEGORICAL.items()
    ]
    ctx.categorical(*CATEGORICAL)
    sql = f"SELECT i, {', '.join(numeric + categorical)} FROM range({rows}) AS t(i) ORDER BY i"
    return {"train": ctx.sql(sql)}


def read_cauce(
    root: str, batch_size: int, shuffle: bool = False, options: dict[str, Any] | None = None
) -> int:
    from cauce.data import shard

    rows = 0
    # cache=False: every run reads the files, as the peers do (runs after the first would
    # otherwise cut their batches out of what the first one kept in memory).
    for batch in shard(
        root, "train", batch_size=batch_size, shuffle=shuffle, format="torch",
        storage_options=options, cache=False,
    ):  # fmt: skip
        rows += len(batch["i"])
    return rows


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (in this process), its endpoint in the environment."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=url,
    )  # fmt: skip
    try:
        yield url
    finally:
        server.stop()


def s3_sides(
    root: str, files: list[str], vocab: dict[str, list[str]], batch_size: int, url: str
) -> list[Side]:
    """Copy the dataset to s3://cauce-bench/ds; the sides that read it from there."""
    import pyarrow.fs as pafs
    import s3fs

    s3 = s3fs.S3FileSystem()
    s3.mkdir("cauce-bench")
    s3.put(root, "cauce-bench/ds", recursive=True)
    uri = "s3://cauce-bench/ds"
    keys = [f"cauce-bench/ds/{os.path.relpath(f, root)}" for f in files]
    native, _ = pafs.FileSystem.from_uri(uri)  # reads AWS_ENDPOINT_URL, as cauce does
    options = {"client_kwargs": {"endpoint_url": url}}
    return [
        Side("cauce_s3", lambda: read_cauce(uri, batch_size)),
        Side("cauce_s3_fsspec", lambda: read_cauce(uri, batch_size, options=options)),
        Side("pyarrow_s3", lambda: read_pyarrow(keys, vocab, batch_size, native)),
    ]


def _codes(values: Any, value_set: Any) -> Any:
    """Strings to int64 codes by their place in ``value_set``, 0 for unknown (NumPy)."""
    import numpy as np
    import pyarrow.compute as pc

    index = pc.index_in(values, value_set=value_set)
    return pc.fill_null(pc.add(index, 1), 0).to_numpy().astype(np.int64)


def read_pyarrow(
    files: list[str], vocab: dict[str, list[str]], batch_size: int, filesystem: Any = None
) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    value_sets = {name: pa.array(values) for name, values in vocab.items()}
    rows = 0
    for path in files:
        pf = pq.ParquetFile(path, read_dictionary=list(vocab), filesystem=filesystem)
        for batch in pf.iter_batches(batch_size=batch_size):
            tensors = {}
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                if name in value_sets:  # dictionary -> codes (0 = unknown), then gather
                    mapped = _codes(column.dictionary, value_sets[name])
                    tensors[name] = torch.from_numpy(mapped[column.indices.to_numpy()])
                else:
                    tensors[name] = torch.from_numpy(column.to_numpy())
            rows += len(tensors["i"])
    return rows


def read_decode_only(files: list[str], vocab: dict[str, list[str]]) -> int:
    """The floor: Arrow decoding the files in large batches, nothing else (not a loader)."""
    import pyarrow.parquet as pq

    rows = 0
    for path in files:
        pf = pq.ParquetFile(path, read_dictionary=list(vocab))
        for batch in pf.iter_batches(batch_size=65_536):
            rows += batch.num_rows
    return rows


def read_petastorm(root: str, batch_size: int) -> int:
    from petastorm import make_batch_reader

    rows = 0
    with make_batch_reader(Path(root).as_uri(), num_epochs=1) as reader:
        for batch in reader:
            rows += len(batch.i)
    return rows


def hf_dataset(files: list[str], cache: str, streaming: bool) -> Any:
    """Hugging Face's Arrow cache of the files (built before its clock starts), or a stream."""
    import datasets

    datasets.disable_progress_bars()
    if streaming:
        return datasets.load_dataset(
            "parquet", data_files=files, split="train", streaming=True, cache_dir=cache
        )
    return datasets.Dataset.from_parquet(files, cache_dir=cache)


def read_hf(ds: Any, batch_size: int) -> int:
    rows = 0
    for batch in ds.with_format("torch").iter(batch_size=batch_size):
        rows += len(batch["i"])
    return rows


def ray_start() -> None:
    """A local Ray instance of this machine's CPUs, quiet, its files under TMPDIR."""
    import ray

    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        _temp_dir=os.path.join(tempfile.gettempdir(), "ray"),
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    # Its worker processes started, as on a cluster that is up: a first small read runs tasks.
    ray.data.range(1000).map_batches(lambda batch: batch).materialize()


def read_ray(files: list[str], vocab: dict[str, list[str]], batch_size: int) -> int:
    import pyarrow as pa
    import ray

    value_sets = {name: pa.array(values) for name, values in vocab.items()}

    def encode(table: pa.Table) -> pa.Table:
        for name, value_set in value_sets.items():
            at = table.schema.get_field_index(name)
            table = table.set_column(at, name, pa.array(_codes(table[name], value_set)))
        return table

    ds = ray.data.read_parquet(files).map_batches(encode, batch_format="pyarrow")
    rows = 0
    for batch in ds.iter_torch_batches(batch_size=batch_size):
        rows += len(batch["i"])
    return rows


def _peer_main(args: argparse.Namespace) -> int:
    """``--measure SIDE``: one timed pass in this interpreter, printed as JSON."""
    files, side = json.loads(args.files), args.measure
    with tempfile.TemporaryDirectory(prefix=f"cauce-ingest-{side}-") as cache:
        os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TMPDIR=cache)
        tempfile.tempdir = cache
        ds = hf_dataset(files, cache, side == "hf_streaming") if side.startswith("hf") else None
        if side == "ray":
            ray_start()
        started = time.perf_counter()
        if side == "petastorm":
            rows = read_petastorm(args.data, args.batch_size)
        elif side == "ray":
            rows = read_ray(files, json.loads(args.vocab), args.batch_size)
        else:
            rows = read_hf(ds, args.batch_size)
        seconds = time.perf_counter() - started
        if side == "ray":
            import ray

            ray.shutdown()
    print(json.dumps({"rows": rows, "seconds": seconds}))
    return 0


class PeerFailed(RuntimeError):
    """A peer in its own interpreter failed: it is skipped, the benchmark goes on."""


class Side:
    def __init__(self, name: str, run: Callable[[], int]) -> None:
        self.name, self.run, self.rates = name, run, []


def _subprocess_side(
    python: str, side: str, *, data: str, files: list[str], vocab: str, batch_size: int,
    rows: int,
) -> Callable[[], int]:  # fmt: skip
    """One timed pass of ``side`` in the interpreter ``python`` (another environment, on its own
    packages: this checkout's PYTHONPATH is not passed on). A pass that reads fewer than
    ``rows`` rows is run again, at most twice: on a loaded machine Petastorm's reader now and
    then ends at once, without an error, having read nothing."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run() -> int:
        for _ in range(3):
            out = subprocess.run(
                [python, __file__, "--measure", side, "--data", data, "--files",
                 json.dumps(files), "--vocab", vocab, "--batch-size", str(batch_size)],
                capture_output=True, text=True, check=False, env=env,
            )  # fmt: skip
            if out.returncode:
                lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
                raise PeerFailed(lines[-1] if lines else f"exit {out.returncode}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            run.seconds = result["seconds"]  # type: ignore[attr-defined]
            if result["rows"] == rows:
                break
            print(f"   note  {side} read {result['rows']} of {rows} rows; again", flush=True)
            run.retries += 1  # type: ignore[attr-defined]
        else:
            raise PeerFailed(f"read {result['rows']} of {rows} rows, 3 times")
        return int(result["rows"])

    run.retries = 0  # type: ignore[attr-defined]
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--petastorm-python", default=os.environ.get("CAUCE_BENCH_PETASTORM"))
    parser.add_argument("--hf-python", default=os.environ.get("CAUCE_BENCH_HF"))
    parser.add_argument("--ray-python", default=os.environ.get("CAUCE_BENCH_RAY"))
    parser.add_argument("--s3", action="store_true", help="also read from moto's S3 server")
    parser.add_argument(
        "--quick",
        action="store_true",
        default=quick_default(),
        help="a smoke run: 200,000 rows, 1 run, no warm-up (default from CAUCE_BENCH_QUICK)",
    )
    parser.add_argument("--measure", choices=tuple(SUBPROCESS_PEERS), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--vocab", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return _peer_main(args)
    if args.quick:
        args.rows, args.runs, args.warmup = 200_000, 1, 0
    with s3_server() if args.s3 else contextlib.nullcontext("") as url:
        return _bench(args, url)


def _bench(args: argparse.Namespace, s3_url: str) -> int:
    import torch

    from cauce.data import prepare

    machine = Machine()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
    folder = tempfile.TemporaryDirectory(prefix="cauce-ingest-")
    root = os.path.join(folder.name, "ds")
    os.environ["CAUCE_BENCH_ROWS"] = str(args.rows)
    started = time.perf_counter()
    m = prepare(build, root, rows_per_file=1_000_000, row_group_rows=131_072)
    size = sum(f.bytes for f in m.splits["train"].files)
    print(
        f"dataset  {args.rows:,} rows x {len(m.columns) - 1} columns (+ row id), "
        f"{m.splits['train'].row_groups} row groups in {len(m.splits['train'].files)} files, "
        f"{size / 2**20:.0f} MiB, prepared in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    files = [os.path.join(root, f.path) for f in m.splits["train"].files]
    vocab = {k: [str(v) for v in vs] for k, vs in m.vocabularies.items()}

    sides = [
        Side("cauce", lambda: read_cauce(root, args.batch_size)),
        Side("pyarrow", lambda: read_pyarrow(files, vocab, args.batch_size)),
        Side("cauce_shuffled", lambda: read_cauce(root, args.batch_size, shuffle=True)),
        Side("decode_only", lambda: read_decode_only(files, vocab)),
    ]
    skipped: dict[str, str] = {}
    data_dir = os.path.dirname(files[0])
    pythons = {
        "petastorm": args.petastorm_python,
        "hf": args.hf_python,
        "hf_streaming": args.hf_python,
        "ray": args.ray_python,
    }
    for name, (module, hint) in SUBPROCESS_PEERS.items():
        python = pythons[name] or sys.executable
        if reason := can_import(python, module):
            skipped[name] = f"{module} does not import in {python}: {reason}; get it with: {hint}"
            print(f"skipped  {name}: {skipped[name]}", flush=True)
            continue
        run = _subprocess_side(
            python, name, data=data_dir, files=files, vocab=json.dumps(vocab),
            batch_size=args.batch_size, rows=args.rows,
        )  # fmt: skip
        sides.append(Side(name, run))
    if s3_url:
        sides += s3_sides(root, files, vocab, args.batch_size, s3_url)

    for round_ in range(args.warmup + args.runs):
        warm = round_ < args.warmup
        for side in list(sides):
            t0 = time.perf_counter()
            try:
                rows = side.run()
            except PeerFailed as exc:
                skipped[side.name] = f"its run failed: {exc}"
                print(f"skipped  {side.name}: {skipped[side.name]}", flush=True)
                sides.remove(side)
                continue
            took = getattr(side.run, "seconds", None) or time.perf_counter() - t0
            if rows != args.rows:
                raise SystemExit(f"error: {side.name} read {rows} rows, expected {args.rows}")
            rate = rows / took
            label = "warm-up" if warm else f"run {round_ - args.warmup + 1}/{args.runs}"
            print(f"{label:>9}  {side.name:<15} {rate / 1e6:8.2f} M rows/s", flush=True)
            if not warm:
                side.rates.append(rate)

    medians = {s.name: statistics.median(s.rates) for s in sides}
    for name, rate in medians.items():
        print(f"median   {name:<15} {rate / 1e6:8.2f} M rows/s")
    ratios = {
        peer: medians["cauce"] / medians[peer] if peer in medians else None
        for peer in ("pyarrow", "petastorm", "hf", "hf_streaming", "ray")
    }
    for peer, ratio in ratios.items():
        if ratio is not None:
            print(f"ratio    cauce/{peer} = {ratio:.3f}")
    figures = {
        "benchmark": "ingest",
        "rows": args.rows,
        "batch_size": args.batch_size,
        "runs": args.runs,
        "rows_per_s_median": {k: round(v) for k, v in medians.items()},
        "rows_per_s_runs": {s.name: [round(r) for r in s.rates] for s in sides},
        "skipped": skipped,
        "peer_reruns": {
            s.name: s.run.retries
            for s in sides
            if getattr(s.run, "retries", 0)  # type: ignore[attr-defined]
        },
        "ratio": round(ratios["pyarrow"] or 0, 4),
        "ratio_petastorm": None if ratios["petastorm"] is None else round(ratios["petastorm"], 4),
        **{
            f"ratio_{peer}": None if ratios[peer] is None else round(ratios[peer], 4)
            for peer in ("hf", "hf_streaming", "ray")
        },
        "ratio_decode_only": round(medians["cauce"] / medians["decode_only"], 4),
        "ratio_s3": _ratio(medians, "cauce_s3", "pyarrow_s3"),
        "ratio_s3_native": _ratio(medians, "cauce_s3", "cauce_s3_fsspec"),
        **machine.finish(),
    }
    folder.cleanup()
    print(json.dumps(figures))
    return 0


def _ratio(medians: dict[str, float], top: str, bottom: str) -> float | None:
    return round(medians[top] / medians[bottom], 4) if top in medians else None


if __name__ == "__main__":
    sys.exit(main())
