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

The multi-host case (``--case multihost``, or ``both``, the default) does the same on the
multi-host test cluster of ``tests/multihost.py`` (Linux network namespaces, root only): a master,
two worker hosts of one core each with their own addresses, and the driver host, where this
script runs again (``--driver-host``) with the application's driver on that host's address; each
gang then has one rank on each worker host. Its ratio is ``ratio_multihost`` (null, with the
reason, where namespaces cannot be made).

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
    parser.add_argument(
        "--case",
        choices=("local", "multihost", "both"),
        default="both",
        help="127.0.0.1, the namespaced hosts, or both (default)",
    )
    parser.add_argument(
        "--driver-host", help="this host's address, for a driver on another host than 127.0.0.1"
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.warmup = 1, 0
    machine = Machine()
    summary: dict[str, Any] = {"benchmark": "spark_launch", "runs": args.runs, "steps": args.steps}
    if args.case in ("local", "both") or args.driver_host:
        summary.update(_local_case(args))
    if args.case in ("multihost", "both") and not args.driver_host:
        summary.update(_multihost_case(args))
    summary.update(machine.finish())
    print(json.dumps(summary))
    return 0


def _local_case(args: argparse.Namespace) -> dict[str, Any]:
    """Both sides on the standalone cluster at ``--master`` (started on 127.0.0.1 if none)."""
    os.environ.setdefault("SPARK_LOCAL_IP", args.driver_host or "127.0.0.1")
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("CAUCE_CLUSTER", "CAUCE_HISTORY", "CAUCE_GPUS", "CAUCE_SPARK_CONF"):
        os.environ.pop(name, None)
    folder = Path(tempfile.mkdtemp(prefix="cauce-bench-spark-"))
    (folder / "cluster").mkdir()
    cluster = spark_fixtures.StandaloneSpark(folder / "cluster")
    if args.driver_host:  # on a host of its own: cauce chooses the driver's address
        del cluster.conf["spark.driver.host"], cluster.conf["spark.driver.bindAddress"]
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
    return {
        "cauce": figures["cauce"],
        "torch_distributor": figures["torch_distributor"],
        "median": {"cauce": cauce_median, "torch_distributor": peer_median},
        "ratio": ratio,
    }


def _multihost_case(args: argparse.Namespace) -> dict[str, Any]:
    """This script again, on the driver host of a namespaced cluster; its figures."""
    import multihost

    tag = os.environ.get("CAUCE_MULTIHOST_TAG", "") + "b"
    index = int(os.environ.get("CAUCE_MULTIHOST_INDEX", "0")) + 150
    cluster = multihost.MultiHost(2, tag=tag, index=index)
    print("starting the multi-host cluster (network namespaces) ...", flush=True)
    try:
        cluster.up()
    except multihost.Unavailable as exc:
        print(f"no multi-host case: {exc}", flush=True)
        return {"ratio_multihost": None, "multihost_skipped": str(exc)}
    try:
        argv = [sys.executable, __file__, "--case", "local", "--master", cluster.master]
        argv += ["--driver-host", cluster.hosts[cluster.driver]]
        argv += ["--runs", str(args.runs), "--warmup", str(args.warmup)]
        inner = cluster.popen_on(
            "d",
            [*argv, "--steps", str(args.steps)],
            env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")},
            stderr=None,
        )
        assert inner.stdout is not None
        lines = []
        for line in inner.stdout:
            print(f"  multihost: {line.rstrip()}", flush=True)
            lines.append(line)
        if inner.wait() != 0:
            raise SystemExit("the multi-host case failed (see above)")
    finally:
        cluster.down()
    found = json.loads(lines[-1])
    return {
        "multihost": {k: found[k] for k in ("cauce", "torch_distributor", "median")},
        "ratio_multihost": found["ratio"],
    }


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
