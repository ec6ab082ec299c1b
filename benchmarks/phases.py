"""Where a training job's time goes: the same 2-rank DDP job under ``cauce run`` and ``torchrun``.

(a) ``cauce run job.yaml`` (framework pytorch, 2 workers of 1 CPU each);
(b) ``torchrun --standalone --nproc-per-node 2``;
both running ``benchmarks/bin/phases_train.py`` with this interpreter, ``OMP_NUM_THREADS=1``, a
fresh run folder per run, on one generated dataset prepared by ``cauce.data.prepare`` before the
clock (180,000 train and 20,000 validation rows of 16 floats and a label, row groups of 16,384
rows): it reads its shards through ``cauce.data.shard`` (shuffled, ``even="pad"``), trains a
few epochs, scores the validation split after each, and saves a checkpoint per epoch through
``cauce.checkpoint.save`` (model and Adam state, about 0.3 MB at the default width).

Each rank writes Unix times at its phase boundaries; the benchmark adds the launcher's start and
end (``time.time()`` around the command) and, for cauce, the history's times (a task's
``ended_at``: its process seen gone; the job's ``ended_at``: recorded as ended). Phases, from
the rank that finished last:

    launch       command started -> first line of the script
    imports      first line -> torch and cauce imported
    rendezvous   init_process_group
    open data    the first shard() call (the dataset's manifest, the plan)
    epochs       the training loops (reading and decoding batches included: "reading" is
                 the time spent waiting for the next batch, a part of "epochs")
    evaluation   the validation passes
    checkpoints  cauce.checkpoint.save (+ a barrier), and the final wait() for background saves
    exit         last line -> process gone (torchrun: -> torchrun returns)
    recording    process gone -> the job recorded as ended in cauce's history (torchrun: 0)
    driver exit  recorded -> ``cauce run`` returns (torchrun: 0)

Runs alternate a, b, a, b, ... after ``--warmup`` discarded rounds; each phase's figure is the
median over runs, and ``ratio`` = median(cauce total) / median(torchrun total), a time (below 1
is faster). The last line printed is one JSON object with every figure.

    .venv/bin/python benchmarks/phases.py [--runs 5] [--epochs 3] [--quick]
    .venv/bin/python benchmarks/phases.py --checkpoint sync --data-cache off   # without the cuts
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import Machine, quick_default, tool

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "bin" / "phases_train.py"
PHASES = (
    "launch",
    "imports",
    "rendezvous",
    "open_data",
    "epochs",
    "evaluation",
    "checkpoints",
    "exit",
    "recording",
    "driver_exit",
)
#: Variables of the calling shell that would change what either launcher does.
_CLEARED = (
    "CAUCE_CLUSTER",
    "CAUCE_HISTORY",
    "CAUCE_GPUS",
    "CAUCE_QUIET",
    "CAUCE_LEASE_DIR",
    "CAUCE_RUN_DIR",
    "CAUCE_PROGRESS_FILE",
    "CAUCE_CONTROL_FILE",
    "CAUCE_CHECKPOINT_DIR",
    "CAUCE_DATA_CACHE",
)


def _job_file(folder: Path, args: list[str]) -> Path:
    # A list command, so that cauce runs the interpreter directly as torchrun does (no /bin/sh).
    command = json.dumps([sys.executable, str(SCRIPT), *args])
    job = folder / "phases.yaml"
    job.write_text(
        "name: bench-phases\n"
        "framework: pytorch\n"
        f"command: {command}\n"
        "roles:\n"
        "  worker:\n"
        "    instances: 2\n"
        "    resources: {cpus: 1}\n",
        encoding="utf-8",
    )
    return job


def _cauce_times(home: Path) -> tuple[float, float]:
    """(the last task seen gone, the job recorded as ended) of the newest job in ``home``."""
    from cauce.history import HistoryStore

    store = HistoryStore(f"sqlite:///{home / 'history.db'}")
    try:
        job = store.list_jobs(limit=1)[0]
        gone = max(t.ended_at or 0.0 for t in store.get_tasks(job.id))
    finally:
        store.close()
    if job.ended_at is None or not gone:
        raise SystemExit(f"error: job {job.id} has no end time in the history")
    return gone, job.ended_at


def phases(
    ranks: list[dict[str, Any]], start: float, end: float, gone: float, recorded: float
) -> dict[str, float]:
    """Seconds per phase, from the rank whose last line came last; they add up to end - start."""
    r = max(ranks, key=lambda t: t["last_line"])
    out = {
        "launch": r["first_line"] - start,
        "imports": r["imports"] - r["first_line"],
        "rendezvous": r["rendezvous"] - r["imports"],
        "open_data": r["open_data"] - r["rendezvous"],
        "epochs": sum(r["epochs"]),
        "evaluation": sum(r["evaluation"]),
        "checkpoints": sum(r["checkpoints"]),
    }
    # What the rank did outside the timed parts (building the model, DDP's first broadcast).
    out["epochs"] += r["last_line"] - r["open_data"] - sum(out[k] for k in PHASES[4:7])
    out["reading"] = sum(r["reading"])
    firsts = [t["first_line"] for t in ranks]
    out["start_skew"] = max(firsts) - min(firsts)  # the ranks' first lines, apart
    out["exit"] = gone - r["last_line"]
    out["recording"] = recorded - gone
    out["driver_exit"] = end - recorded
    return out


def _run(
    name: str, argv: list[str], env: dict[str, str], out: Path, home: Path
) -> dict[str, float]:
    for old in out.glob("rank-*.json"):
        old.unlink()
    start = time.time()
    done = subprocess.run(argv, env=env, cwd=out, capture_output=True, text=True, check=False)
    end = time.time()
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]
    if done.returncode != 0 or len(ranks) != 2:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise SystemExit(f"error: {name} exited {done.returncode}; last lines:\n{tail}")
    gone, recorded = _cauce_times(home) if name == "cauce" else (end, end)
    return phases(ranks, start, end, gone, recorded) | {"total": end - start}


#: Figures printed and kept beside the phases: "reading" is a part of "epochs"; "start_skew"
#: how far apart the ranks' first lines were (a rank that starts late keeps the other waiting
#: in the rendezvous).
FIGURES = (*PHASES, "total", "reading", "start_skew")


def _prepare(folder: Path, rows: int) -> Path:
    from cauce.data import prepare

    os.environ["PHASES_ROWS"] = str(rows)
    out = folder / "dataset"
    prepare(f"{SCRIPT}:build", out, row_group_rows=16_384)
    return out


def micro_reading(data: Path, rounds: int) -> dict[str, float]:
    """Seconds of one training epoch's reading (rank 0 of 2, as the script reads), after a first
    epoch: from the files every epoch (``cache=False``) and cut from memory (the default).
    In this process, alternating; medians."""
    from cauce.data import shard
    from cauce.data._cache import CACHE

    def epoch(number: int, cache: bool) -> float:
        start = time.perf_counter()
        for _ in shard(
            data, "train", batch_size=1024, shuffle=True, seed=0, epoch=number, even="pad",
            format="torch", rank=0, world_size=2, cache=cache,
        ):  # fmt: skip
            pass
        return time.perf_counter() - start

    epoch(0, False)  # imports and first reads of the files, not counted
    first: dict[bool, list[float]] = {False: [], True: []}
    later: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for cache in (False, True):
            CACHE.clear()
            first[cache].append(epoch(0, cache))
            later[cache].extend(epoch(n, cache) for n in range(1, 4))
    CACHE.clear()
    return {
        "read_first_epoch_stream_s": round(statistics.median(first[False]), 4),
        "read_first_epoch_cached_s": round(statistics.median(first[True]), 4),
        "read_epoch_stream_s": round(statistics.median(later[False]), 4),
        "read_epoch_cached_s": round(statistics.median(later[True]), 4),
    }


def micro_checkpoint(folder: Path, saves: int, hidden: int) -> dict[str, float]:
    """Milliseconds the training thread spends in ``cauce.checkpoint.save`` of the script's
    model and Adam state (``--hidden`` wide), synchronous and ``background=True``."""
    import torch

    from cauce.runtime import checkpoint

    model = torch.nn.Sequential(
        torch.nn.Linear(16, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(), torch.nn.Linear(hidden, 1),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.zeros(2, 16)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    took: dict[bool, list[float]] = {False: [], True: []}
    for step in range(saves):
        for background in (False, True):
            where = folder / ("background" if background else "sync")
            start = time.perf_counter()
            checkpoint.save(state, step, directory=where, background=background)
            took[background].append(time.perf_counter() - start)
            checkpoint.wait()
    size = sum(p.stat().st_size for p in (folder / "sync").rglob("state.*")) // 3
    return {
        f"checkpoint_bytes_h{hidden}": size,
        f"checkpoint_sync_ms_h{hidden}": round(statistics.median(took[False]) * 1e3, 3),
        f"checkpoint_background_ms_h{hidden}": round(statistics.median(took[True]) * 1e3, 3),
    }


def _table(medians: dict[str, dict[str, float]]) -> None:
    print(f"{'phase':<12} {'cauce s':>9} {'torchrun s':>11} {'cauce - torchrun':>17}")
    for phase in FIGURES:
        a, b = medians["cauce"][phase], medians["torchrun"][phase]
        label = f"({phase.replace('_', ' ')})" if phase in FIGURES[-2:] else phase
        print(f"{label:<12} {a:9.3f} {b:11.3f} {a - b:+17.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows generated (default 200k)")
    parser.add_argument(
        "--checkpoint",
        choices=("background", "sync"),
        default="background",
        help="how the script saves its checkpoints (default background)",
    )
    parser.add_argument(
        "--data-cache",
        choices=("on", "off"),
        default="on",
        help="shard()'s in-memory cache of decoded row groups (default on; off: "
        "CAUCE_DATA_CACHE=0, every epoch read from the files)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=quick_default(),
        help="2 runs of 2 epochs, no warm-up (default from CAUCE_BENCH_QUICK)",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.warmup, args.epochs = 2, 0, 2
    if args.runs < 1 or args.epochs < 1:
        parser.error("--runs and --epochs must be >= 1")

    machine = Machine()
    with tempfile.TemporaryDirectory(prefix="cauce-bench-") as tmp:
        folder = Path(tmp)
        data = _prepare(folder, args.rows)
        out = folder / "out"
        out.mkdir()
        home = folder / "home"
        env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        env.update(
            OMP_NUM_THREADS="1", CAUCE_HOME=str(home), CAUCE_LEASE_DIR=str(folder / "leases")
        )
        script_args = ["--data", str(data), "--out", str(out), "--epochs", str(args.epochs)]
        if args.checkpoint == "background":
            script_args.append("--background")
        launchers = {
            "cauce": [tool("cauce"), "run", str(_job_file(folder, script_args))],
            "torchrun": [
                tool("torchrun"),
                "--standalone",
                "--nproc-per-node",
                "2",
                str(SCRIPT),
                *script_args,
            ],
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in launchers}
        for round_ in range(args.warmup + args.runs):
            warm = round_ < args.warmup
            for name, argv in launchers.items():
                run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=folder))
                # torchrun's tasks have no cauce run folder: give each run a fresh one, or the
                # checkpoints of the runs before would pile up (cauce makes one per job).
                run_env = {**env, "CAUCE_RUN_DIR": str(run_dir)} if name == "torchrun" else env
                figures = _run(name, argv, run_env, out, home)
                label = "warm-up" if warm else f"run {round_ - args.warmup + 1}/{args.runs}"
                parts = " ".join(f"{k} {figures[k]:.2f}" for k in PHASES if figures[k] >= 0.005)
                print(f"{label:>9}  {name:<8} {figures['total']:6.2f} s: {parts}", flush=True)
                if not warm:
                    runs[name].append(figures)
                shutil.rmtree(run_dir, ignore_errors=True)

        micro = micro_reading(data, 2 if args.quick else 5)
        for hidden in (128, 1024):
            (folder / f"micro-{hidden}").mkdir()
            micro |= micro_checkpoint(folder / f"micro-{hidden}", 5 if args.quick else 15, hidden)

    medians = {
        name: {k: statistics.median(r[k] for r in results) for k in FIGURES}
        for name, results in runs.items()
    }
    _table(medians)
    ratio = medians["cauce"]["total"] / medians["torchrun"]["total"]
    print(f"ratio    cauce/torchrun = {ratio:.3f} (wall time of the whole job)")
    print(
        f"reading an epoch (rank 0 of 2, after the first): {micro['read_epoch_stream_s']:.3f} s "
        f"from the files, {micro['read_epoch_cached_s']:.3f} s from memory; the first "
        f"{micro['read_first_epoch_stream_s']:.3f} s, {micro['read_first_epoch_cached_s']:.3f} s"
    )
    for hidden in (128, 1024):
        print(
            f"checkpoint.save, width {hidden} ({micro[f'checkpoint_bytes_h{hidden}']:,} bytes): "
            f"{micro[f'checkpoint_sync_ms_h{hidden}']:.2f} ms, background "
            f"{micro[f'checkpoint_background_ms_h{hidden}']:.2f} ms on the training thread"
        )
    figures: dict[str, Any] = {
        "benchmark": "phases",
        "runs": args.runs,
        "epochs": args.epochs,
        "rows": args.rows,
        "checkpoint": args.checkpoint,
        "data_cache": args.data_cache,
        "cauce_s": {k: round(v, 4) for k, v in medians["cauce"].items()},
        "torchrun_s": {k: round(v, 4) for k, v in medians["torchrun"].items()},
        "cauce_runs_total_s": [round(r["total"], 4) for r in runs["cauce"]],
        "torchrun_runs_total_s": [round(r["total"], 4) for r in runs["torchrun"]],
        "cauce_share_s": round(
            sum(medians["cauce"][k] for k in ("launch", "exit", "recording", "driver_exit")), 4
        ),
        **micro,
        "ratio": round(ratio, 4),
        **machine.finish(),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
