"""Launch overhead: the same 2-rank Gloo all-reduce started by ``cauce run`` and by ``torchrun``.

(a) ``cauce run job.yaml`` on a job file (framework pytorch, 2 workers of 1 CPU each);
(b) ``torchrun --standalone --nproc-per-node 2``;
both running ``benchmarks/bin/allreduce.py`` with the same interpreter and ``OMP_NUM_THREADS=1``.
Each is run ``--runs`` times, alternating a, b, a, b, ... after one discarded warm-up round; the
wall time of the whole command is measured with ``time.perf_counter``. The last line printed is
one JSON object with every figure; ``ratio`` is median(cauce) / median(torchrun).

    .venv/bin/python benchmarks/launch.py --runs 7
    .venv/bin/python benchmarks/launch.py --quick     # 2 runs, no warm-up: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import Machine, quick_default, tool

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "bin" / "allreduce.py"
#: Variables of the calling shell that would change what either launcher does.
_CLEARED = ("CAUCE_CLUSTER", "CAUCE_HISTORY", "CAUCE_GPUS", "CAUCE_QUIET", "CAUCE_LEASE_DIR")


def _job_file(folder: Path, steps: int) -> Path:
    # A list command, so that cauce runs the interpreter directly as torchrun does (no /bin/sh).
    command = json.dumps([sys.executable, str(SCRIPT), "--steps", str(steps)])
    job = folder / "allreduce.yaml"
    job.write_text(
        "name: bench-allreduce\n"
        "framework: pytorch\n"
        f"command: {command}\n"
        "roles:\n"
        "  worker:\n"
        "    instances: 2\n"
        "    resources: {cpus: 1}\n",
        encoding="utf-8",
    )
    return job


def _timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise SystemExit(f"error: {argv[0]} exited {done.returncode}; last lines:\n{tail}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each (default 7)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--steps", type=int, default=5, help="all-reduces per run (default 5)")
    parser.add_argument(
        "--quick",
        action="store_true",
        default=quick_default(),
        help="2 runs, no warm-up (default from CAUCE_BENCH_QUICK)",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.warmup = 2, 0
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")

    machine = Machine()
    with tempfile.TemporaryDirectory(prefix="cauce-bench-") as tmp:
        folder = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        env.update(
            OMP_NUM_THREADS="1",
            CAUCE_HOME=str(folder / "home"),
            CAUCE_LEASE_DIR=str(folder / "leases"),
        )
        job = _job_file(folder, args.steps)
        launchers = {
            "cauce": [tool("cauce"), "run", str(job)],
            "torchrun": [
                tool("torchrun"),
                "--standalone",
                "--nproc-per-node",
                "2",
                str(SCRIPT),
                "--steps",
                str(args.steps),
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in launchers}
        for round_ in range(args.warmup + args.runs):
            warm = round_ < args.warmup
            for name, argv in launchers.items():
                took = _timed(argv, env, folder)
                label = "warm-up" if warm else f"run {round_ - args.warmup + 1}/{args.runs}"
                print(f"{label:>9}  {name:<8} {took:7.3f} s", flush=True)
                if not warm:
                    times[name].append(took)

    cauce, torchrun = (statistics.median(times[name]) for name in ("cauce", "torchrun"))
    ratio = cauce / torchrun
    print(f"median   cauce    {cauce:7.3f} s")
    print(f"median   torchrun {torchrun:7.3f} s")
    print(f"ratio    cauce/torchrun = {ratio:.3f}")
    figures = {
        "benchmark": "launch",
        "runs": args.runs,
        "cauce_median_s": round(cauce, 4),
        "torchrun_median_s": round(torchrun, 4),
        "cauce_runs_s": [round(t, 4) for t in times["cauce"]],
        "torchrun_runs_s": [round(t, 4) for t in times["torchrun"]],
        "ratio": round(ratio, 4),
        **machine.finish(),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
