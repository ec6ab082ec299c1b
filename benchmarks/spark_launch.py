"""Launch on Spark: the same 2-rank Gloo all-reduce through cauce and through TorchDistributor.

(a) ``cauce.run`` of a job file (framework pytorch, 2 workers of 1 CPU) with ``--cluster`` the
    standalone master: one barrier stage, the env contract computed on the executors;
(b) ``pyspark.ml.torch.distributor.TorchDistributor(num_processes=2, local_mode=False,
    use_gpu=False).run(allreduce.py)``: one barrier stage whose tasks run ``torchrun`` with one
    process each;
both in this process, on one Spark application kept open for the whole benchmark (its start is
not measured), running ``benchmarks/bin/allreduce.py`` with the same interpreter. The cluster is
a Spark standalone master and two workers of one core on 127.0.0.1, started here (from
``tests/spark_fixtures.py``) unless ``--master`` names one. After ``--warmup`` discarded rounds,
each runs ``--runs`` times, alternating a, b, a, b, ...; a figure is the wall time of the call.
The last line printed is one JSON object; ``ratio`` is median(cauce) / median(TorchDistributor).

    .venv/bin/python benchmarks/spark_launch.py --runs 5
    .venv/bin/python benchmarks/spark_launch.py --quick    # 1 run, no warm-up: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "bin" / "allreduce.py"
sys.path.insert(0, str(HERE.parent / "tests"))  # the standalone cluster of the tests

from _machine import Machine, quick_default  # noqa: E402

import spark_fixtures  # noqa: E402


class _Quiet:
    """A cauce console that keeps the lines (printed only when a run fails)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def status(self, text: str) -> None:
        with self._lock:
            self.lines.append(f"cauce: {text}")

    def output(self, task_id: str, line: str) -> None:
        with self._lock:
            self.lines.append(f"[{task_id}] {line}")


def _cauce_run(master: str, folder: Path, steps: int) -> float:
    import cauce

    command = json.dumps([sys.executable, str(SCRIPT), "--steps", str(steps)])
    folder.mkdir(parents=True, exist_ok=True)
    job = folder / "allreduce.yaml"
    job.write_text(
        "name: bench-allreduce\nframework: pytorch\n"
        f"command: {command}\n"
        "roles:\n  worker:\n    instances: 2\n    resources: {cpus: 1}\n",
        encoding="utf-8",
    )
    console = _Quiet()
    started = time.perf_counter()
    result = cauce.run(
        job,
        cluster=master,
        home=folder / "home",
        history=f"sqlite:///{folder / 'history.db'}",
        console=console,
    )
    took = time.perf_counter() - started
    if not result.ok:
        raise SystemExit("cauce failed:\n" + "\n".join(console.lines) + "\n" + result.root_cause)
    return took


def _distributor_run(steps: int) -> float:
    from pyspark.ml.torch.distributor import TorchDistributor

    distributor = TorchDistributor(num_processes=2, local_mode=False, use_gpu=False)
    started = time.perf_counter()
    distributor.run(str(SCRIPT), "--steps", str(steps))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs of each (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds not counted (default 1)")
    parser.add_argument("--steps", type=int, default=5, help="all-reduces per run (default 5)")
    parser.add_argument("--master", help="an existing standalone master (default: start one)")
    parser.add_argument(
        "--quick",
        action="store_true",
        default=quick_default(),
        help="1 run, no warm-up (default from CAUCE_BENCH_QUICK)",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.warmup = 1, 0
    machine = Machine()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("CAUCE_CLUSTER", "CAUCE_HISTORY", "CAUCE_GPUS", "CAUCE_SPARK_CONF"):
        os.environ.pop(name, None)
    folder = Path(tempfile.mkdtemp(prefix="cauce-bench-spark-"))
    (folder / "cluster").mkdir()
    cluster = spark_fixtures.StandaloneSpark(folder / "cluster")
    if args.master:
        cluster.master = args.master
    else:
        print("starting a standalone master and 2 workers on 127.0.0.1 ...", flush=True)
        cluster.start()
    try:
        started = time.perf_counter()
        app = spark_fixtures.HeldApp(cluster)
        print(f"Spark application ready in {time.perf_counter() - started:.1f} s", flush=True)
        try:
            figures = _measure(cluster.master, folder, args)
        finally:
            app.close()
    finally:
        if not args.master:
            cluster.stop()
    cauce_median = statistics.median(figures["cauce"])
    peer_median = statistics.median(figures["torch_distributor"])
    ratio = cauce_median / peer_median
    print(f"cauce median:            {cauce_median:.2f} s")
    print(f"TorchDistributor median: {peer_median:.2f} s")
    print(f"ratio cauce / TorchDistributor: {ratio:.3f}")
    summary: dict[str, Any] = {
        "benchmark": "spark_launch",
        "runs": args.runs,
        "steps": args.steps,
        "cauce": figures["cauce"],
        "torch_distributor": figures["torch_distributor"],
        "median": {"cauce": cauce_median, "torch_distributor": peer_median},
        "ratio": ratio,
        **machine.finish(),
    }
    print(json.dumps(summary))
    return 0


def _measure(master: str, folder: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"cauce": [], "torch_distributor": []}
    for round_ in range(args.warmup + args.runs):
        counted = round_ >= args.warmup
        a = _cauce_run(master, folder / f"r{round_}", args.steps)
        b = _distributor_run(args.steps)
        label = f"run {round_ - args.warmup + 1}" if counted else f"warm-up {round_ + 1}"
        print(f"{label}: cauce {a:.2f} s, TorchDistributor {b:.2f} s", flush=True)
        if counted:
            figures["cauce"].append(round(a, 3))
            figures["torch_distributor"].append(round(b, 3))
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
