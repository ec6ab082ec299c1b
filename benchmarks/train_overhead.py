"""Training overhead: the flights training loop under ``cauce run`` and under ``torchrun``.

(a) ``cauce run job.yaml`` (framework pytorch, 2 workers of 1 CPU each);
(b) ``torchrun --standalone --nproc-per-node 2``;
both running ``examples/flights/train.py --no-baseline --epochs N`` with this interpreter,
``OMP_NUM_THREADS=1`` and a fresh run folder (checkpoints, model, results) per run. The script
itself measures its epoch loop (training, validation, checkpoint, report) and writes the
samples per second to its results file: that throughput, not the launch, is compared. Runs
alternate a, b, a, b, ... after ``--warmup`` discarded rounds; ``ratio`` is
median(cauce samples/s) / median(torchrun samples/s): 1 means no overhead, below 1 slower.

(c) ``cauce run`` of the same job with MLflow tracking on (``tracking:`` pointed at a local
``mlflow server``, SQLite store, started before the runs and stopped after them): every report
goes to MLflow from the driver. ``ratio_mlflow`` is median(samples/s with tracking) /
median(samples/s of (a)): what tracking costs the training loop (aim: at least 0.97). Without
mlflow installed, (c) is skipped and ``ratio_mlflow`` is null.

Then two microbenchmarks, in this process: the time of one ``cauce.report`` call with a
driver's progress and control files set (as in a task) and without (a no-op), and of one
``cauce.checkpoint.save`` of the flights model and Adam state against a plain ``torch.save`` of
the same state into the same folder. The last line printed is one JSON object of the figures.

    .venv/bin/python benchmarks/train_overhead.py [--runs 5] [--epochs 2] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _machine import Machine, quick_default, tool

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flights"
TRAIN = EXAMPLE / "train.py"
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
)


def _dataset(given: str | None, folder: Path) -> Path:
    """The prepared flights dataset: ``--data``, else ``data/flights``, else made in ``folder``."""
    from cauce.data import DataError, prepare, read_manifest

    for candidate in [given] if given else [str(ROOT / "data" / "flights")]:
        try:
            read_manifest(candidate)
            return Path(candidate)
        except DataError:
            if given:
                raise SystemExit(f"error: {given} is not a prepared dataset") from None
    out = folder / "flights"
    print(f"preparing the flights dataset in {out}", flush=True)
    prepare(f"{EXAMPLE / 'features.py'}:build", out)
    return out


def _job_file(folder: Path, args: list[str], tracking: str = "") -> Path:
    # A list command, so that cauce runs the interpreter directly as torchrun does (no /bin/sh).
    command = json.dumps([sys.executable, str(TRAIN), *args])
    job = folder / ("train-mlflow.yaml" if tracking else "train.yaml")
    extra = f"tracking: {{uri: {json.dumps(tracking)}, experiment: bench-train}}\n"
    job.write_text(
        "name: bench-train\n"
        "framework: pytorch\n"
        f"command: {command}\n"
        "roles:\n"
        "  worker:\n"
        "    instances: 2\n"
        "    resources: {cpus: 1}\n"
        "hang_timeout: 120\n" + (extra if tracking else ""),
        encoding="utf-8",
    )
    return job


class _MlflowServer:
    """``mlflow server`` on 127.0.0.1 (SQLite store, local artifacts) for case (c); None's
    ``uri`` is empty when mlflow is not installed."""

    def __init__(self, folder: Path) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.uri = ""
        program = Path(sys.executable).with_name("mlflow")
        if not program.exists():
            print("mlflow is not installed: no MLflow case", flush=True)
            return
        from cauce.cluster import free_ports

        port = free_ports(1)[0]
        argv = [str(program), "server", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--workers", "1"]
        argv += ["--artifacts-destination", str(folder / "mlflow-artifacts")]
        with open(folder / "mlflow.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    self.uri = f"http://127.0.0.1:{port}"
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise SystemExit(f"error: mlflow server did not start; see {folder / 'mlflow.log'}")

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            self.proc = None


def _run(argv: list[str], env: dict[str, str], results: Path) -> tuple[float, float]:
    """Run one launcher; returns (samples/s of the epoch loop, wall seconds of the command)."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=EXAMPLE, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0 or not results.is_file():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise SystemExit(f"error: {argv[0]} exited {done.returncode}; last lines:\n{tail}")
    return float(json.loads(results.read_text())["train_samples_per_s"]), took


def _median_us(times: list[float]) -> float:
    return statistics.median(times) * 1e6


def bench_report(calls: int, folder: Path) -> dict[str, float]:
    """Seconds per ``cauce.report`` call: as a task under the driver, and with no driver."""
    from cauce.runtime import _report

    def timed() -> float:
        _report._channel = _report._Channel()  # reopens the files the variables name
        start = time.perf_counter()
        for step in range(calls):
            _report.report(step, train_loss=0.5, val_auc=0.7, val_logloss=0.4)
        return (time.perf_counter() - start) / calls

    without, managed = [], []
    for _ in range(5):
        for name in ("CAUCE_PROGRESS_FILE", "CAUCE_CONTROL_FILE"):
            os.environ.pop(name, None)
        without.append(timed())
        os.environ["CAUCE_PROGRESS_FILE"] = str(folder / "progress.jsonl")
        os.environ["CAUCE_CONTROL_FILE"] = str(folder / "control")  # absent, as in a task
        managed.append(timed())
    for name in ("CAUCE_PROGRESS_FILE", "CAUCE_CONTROL_FILE"):
        os.environ.pop(name, None)
    _report._channel = _report._Channel()
    return {
        "report_us": round(_median_us(managed), 2),
        "report_no_driver_us": round(_median_us(without), 2),
        "report_added_us": round(_median_us(managed) - _median_us(without), 2),
    }


def bench_checkpoint(saves: int, folder: Path) -> dict[str, float]:
    """Seconds per ``cauce.checkpoint.save`` of the flights model + Adam, and per torch.save."""
    import torch

    sys.path.insert(0, str(EXAMPLE))
    from train import FlightsNet

    # The shapes of the flights model: 6 categorical columns, 23 numeric with 16 bins each.
    net = FlightsNet([17, 4, 104, 4, 36, 7], torch.zeros(23, 17), emb_dim=8, hidden=64, dropout=0.1)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.zeros(2, 6, dtype=torch.int64), torch.zeros(2, 23)).sum().backward()
    optimizer.step()  # so that Adam has its moments
    state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 0}
    from cauce.runtime import checkpoint

    cauce_times, torch_times = [], []
    plain = folder / "plain"
    plain.mkdir()
    for step in range(saves):
        start = time.perf_counter()
        checkpoint.save(state, step, directory=folder / "checkpoints")
        cauce_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.save(state, plain / f"state-{step % 3}.pt")
        torch_times.append(time.perf_counter() - start)
    size = (plain / "state-0.pt").stat().st_size
    return {
        "checkpoint_bytes": size,
        "checkpoint_save_ms": round(statistics.median(cauce_times) * 1e3, 3),
        "torch_save_ms": round(statistics.median(torch_times) * 1e3, 3),
        "checkpoint_added_ms": round(
            (statistics.median(cauce_times) - statistics.median(torch_times)) * 1e3, 3
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--data", help="a prepared flights dataset (default data/flights)")
    parser.add_argument(
        "--quick",
        action="store_true",
        default=quick_default(),
        help="1 epoch, 2 runs, no warm-up, fewer calls (default from CAUCE_BENCH_QUICK)",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.warmup, args.epochs = 2, 0, 1
    if args.runs < 1 or args.epochs < 1:
        parser.error("--runs and --epochs must be >= 1")

    machine = Machine()
    with tempfile.TemporaryDirectory(prefix="cauce-bench-") as tmp:
        folder = Path(tmp)
        data = _dataset(args.data, folder)
        env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        env.update(
            OMP_NUM_THREADS="1",
            CAUCE_HOME=str(folder / "home"),
            CAUCE_LEASE_DIR=str(folder / "leases"),
        )
        results = folder / "results.json"
        train_args = ["--data", str(data), "--epochs", str(args.epochs), "--no-baseline"]
        train_args += ["--results", str(results)]
        job = _job_file(folder, train_args)
        server = _MlflowServer(folder)
        launchers = {
            "cauce": [tool("cauce"), "run", str(job)],
            "torchrun": [
                tool("torchrun"),
                "--standalone",
                "--nproc-per-node",
                "2",
                str(TRAIN),
                *train_args,
            ],
        }
        if server.uri:
            launchers["cauce_mlflow"] = [
                tool("cauce"),
                "run",
                str(_job_file(folder, train_args, server.uri)),
            ]
        speed: dict[str, list[float]] = {name: [] for name in launchers}
        wall: dict[str, list[float]] = {name: [] for name in launchers}
        try:  # the MLflow server stops, also when a run fails
            for round_ in range(args.warmup + args.runs):
                warm = round_ < args.warmup
                for name, argv in launchers.items():
                    results.unlink(missing_ok=True)
                    run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=folder))
                    # torchrun's tasks have no cauce run folder: give each run a fresh one, or the
                    # script would resume from the previous run's checkpoints (cauce makes one).
                    run_env = {**env, "CAUCE_RUN_DIR": str(run_dir)} if name == "torchrun" else env
                    samples, took = _run(argv, run_env, results)
                    label = "warm-up" if warm else f"run {round_ - args.warmup + 1}/{args.runs}"
                    print(
                        f"{label:>9}  {name:<8} {samples:10,.0f} samples/s  ({took:6.2f} s in all)",
                        flush=True,
                    )
                    if not warm:
                        speed[name].append(samples)
                        wall[name].append(took)
                    shutil.rmtree(run_dir, ignore_errors=True)
        finally:
            server.stop()

        micro = folder / "micro"
        micro.mkdir()
        figures_report = bench_report(2_000 if args.quick else 20_000, micro)
        figures_checkpoint = bench_checkpoint(10 if args.quick else 50, micro)

    cauce_speed, torch_speed = (statistics.median(speed[n]) for n in ("cauce", "torchrun"))
    ratio = cauce_speed / torch_speed
    mlflow_speed = statistics.median(speed["cauce_mlflow"]) if speed.get("cauce_mlflow") else None
    ratio_mlflow = mlflow_speed / cauce_speed if mlflow_speed is not None else None
    print(f"median   cauce    {cauce_speed:10,.0f} samples/s")
    print(f"median   torchrun {torch_speed:10,.0f} samples/s")
    print(f"ratio    cauce/torchrun = {ratio:.3f} (throughput; 1 = no overhead)")
    if mlflow_speed is not None and ratio_mlflow is not None:
        print(f"median   cauce with MLflow tracking {mlflow_speed:10,.0f} samples/s")
        print(f"ratio    with MLflow / without = {ratio_mlflow:.3f}")
    print(
        f"cauce.report: {figures_report['report_us']:.1f} us a call under a driver, "
        f"{figures_report['report_no_driver_us']:.1f} us without; "
        f"adds {figures_report['report_added_us']:.1f} us"
    )
    print(
        f"cauce.checkpoint.save: {figures_checkpoint['checkpoint_save_ms']:.2f} ms, torch.save "
        f"{figures_checkpoint['torch_save_ms']:.2f} ms ({figures_checkpoint['checkpoint_bytes']:,}"
        f" bytes); adds {figures_checkpoint['checkpoint_added_ms']:.2f} ms"
    )
    figures: dict[str, Any] = {
        "benchmark": "train_overhead",
        "runs": args.runs,
        "epochs": args.epochs,
        "cauce_samples_per_s": round(cauce_speed, 1),
        "torchrun_samples_per_s": round(torch_speed, 1),
        "cauce_runs_samples_per_s": [round(s, 1) for s in speed["cauce"]],
        "torchrun_runs_samples_per_s": [round(s, 1) for s in speed["torchrun"]],
        "cauce_wall_median_s": round(statistics.median(wall["cauce"]), 3),
        "torchrun_wall_median_s": round(statistics.median(wall["torchrun"]), 3),
        **figures_report,
        **figures_checkpoint,
        "cauce_mlflow_runs_samples_per_s": [round(s, 1) for s in speed.get("cauce_mlflow", [])],
        "ratio": round(ratio, 4),
        "ratio_mlflow": round(ratio_mlflow, 4) if ratio_mlflow is not None else None,
        **machine.finish(),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
