"""Tuning: what a trial costs in cauce beyond the trial itself, and what pruning saves.

(a) Overhead per trial. ``--trials`` trivial trials (a Python script that imports cauce, reports
    one value and exits) run by ``cauce.tune.tune`` (each trial a gang: a JobDriver in a thread,
    the history store, Optuna's RDB storage in the same SQLite file) and by the peer: the same
    loop written with Optuna directly, ``study.optimize`` with ``n_jobs`` threads, each trial one
    ``subprocess.run`` of the same script, Optuna's RDB storage in SQLite too. Both use the random
    sampler with the same seed and no pruner, at parallel 1 and 2, alternating cauce and peer
    ``--runs`` times. Three figures per trial, medians of the runs: the wall time of a trial
    slot, ``parallel * wall / trials`` (the throughput; on a machine shared with other work it is
    as noisy as the trials themselves); the slot's dead time, the part of ``parallel * span``
    not spent running a trial's process (from the start and exit of each process, recorded by
    cauce's driver and by the peer's loop), which is the launcher's own cost between trials;
    and the CPU time of the launcher with all its children. The overhead is the larger of the
    dead time and the CPU time that cauce adds, as a fraction of a 1-second trial. Beside
    them, the floor: Optuna's ``study.optimize`` with ``n_jobs`` threads running the same
    objective in-process (draw x, return x * x: no process at all), on the same storage, so
    the cost of Optuna's own bookkeeping per trial is known; ``ratio_subprocess`` and
    ``ratio_inprocess`` are cauce's wall time over the loop's and over the floor's, at
    parallel 1.

(b) Pruning. A synthetic learning curve of known cost (``--steps`` steps of ``--step-cost``
    seconds each; the loss decays from 1 to a final value that depends on x and y, at the same
    rate for all, so curves do not cross: a better run is better at every step) under the same
    budget of ``--budget`` trials, ``--parallel`` at a time, random sampler with the same seed
    (so both draw the same configurations): random search without pruning, then with ASHA
    (``min_steps`` 1, ``reduction_factor`` 3). The time ratio is the wall time ASHA needs to
    finish a trial at least as good as the best of the random search, over the wall time of the
    random search. (With curves that cross, ASHA may prune the best configuration; then it never
    reaches that value, and the line says so.)

(c) Cost per trial with a trial that imports NumPy, apart from the imports, and reusable
    workers (``tune.entrypoint``) and warm starts (``preload:``) against an Optuna loop of
    subprocesses: see ``benchmarks/_tune_cost.py``; ``ratio_reuse`` is cauce with reuse / the
    loop, ``ratio_warm`` cauce with warm starts / the loop.

(d) Pruners on public multi-fidelity benchmarks (mf-prior-bench's MF-Hartmann families):
    random, ASHA at several ``min_steps``, Hyperband, TPE with each, in simulated time; see
    ``benchmarks/_tune_hpo.py`` (and how to install mf-prior-bench there).

The last line printed is one JSON object with every figure: ``overhead`` is (a)'s worst
overhead (over parallel 1 and 2, dead time or CPU) as a fraction of a 1-second trial,
``ratio_curve`` is (b)'s time ratio ASHA / random, ``ratio_reuse`` (c)'s, and ``ratio`` and
``reached`` are (d)'s for cauce's default sampler and pruner: the median over instances of the
time to random search's best over random search's time, and the share of instances where it
got there.

    .venv/bin/python benchmarks/tune.py              # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/tune.py --quick      # fewer runs and trials, about 1 minute

Also printed: the machine's load before and after (``benchmarks/_machine.py``), in the JSON too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _machine import Machine, quick_default
from _tune_cost import cost
from _tune_hpo import DEFAULT, available, compare

TRIVIAL = """
import cauce
x = float(cauce.context().params.get("x", 0.5))
cauce.report(0, loss=x * x)
print(x * x)
"""

CURVE = """
import math, sys, time
import cauce
p = cauce.context().params
x, y = float(p.get("x", 0.5)), float(p.get("y", 0.5))
steps, cost = int(sys.argv[1]), float(sys.argv[2])
final = (x - 0.3) ** 2 + (y - 0.7) ** 2
# Every run starts at a loss of 1 and decays towards its final value at the same rate: curves
# keep their order, so what is measured is the time pruning saves, not ASHA's luck.
tau = 4.0
for step in range(steps):
    time.sleep(cost)
    cauce.report(step, loss=final + (1.0 - final) * math.exp(-step / tau))
"""

_CLEARED = ("CAUCE_CLUSTER", "CAUCE_HISTORY", "CAUCE_GPUS", "CAUCE_LEASE_DIR", "CAUCE_PARAMS")


class _Quiet:
    """A TuneConsole that shows nothing."""

    def started(self, progress: Any, note: str) -> None: ...

    def changed(self, trial: Any, progress: Any) -> None: ...

    def tick(self, progress: Any) -> None: ...

    def finished(self, result: Any) -> None: ...


def _spec(command: list[str], space: dict[str, Any], pruner: Any, workdir: Path) -> Any:
    from cauce import parse_job

    return parse_job(
        {
            "name": "bench",
            "command": command,
            "workdir": str(workdir),
            "grace_period": 2,
            "tune": {
                "objective": {"metric": "loss", "direction": "min"},
                "space": space,
                "sampler": {"type": "random", "seed": 0},
                "pruner": pruner,
                "max_failures": 0,
            },
        }
    )


def _fresh_home(root: Path, name: str) -> Path:
    home = root / f"{name}-{time.monotonic_ns()}"
    home.mkdir()
    os.environ["CAUCE_HOME"] = str(home)  # get_cluster reads the host config from it
    return home


@dataclass
class Run:
    """One study's figures: wall time, CPU time (this process and its children) and the
    intervals during which each trial's process ran."""

    wall: float
    cpu: float
    spans: list[tuple[float, float]]
    result: Any = None

    def dead_per_trial(self, parallel: int) -> float:
        """Slot time not spent running a trial's process, per trial: what the launcher costs
        between and around trials, apart from the noise of the trials themselves."""
        first = min(start for start, _ in self.spans)
        last = max(end for _, end in self.spans)
        busy = sum(end - start for start, end in self.spans)
        return (parallel * (last - first) - busy) / len(self.spans)


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_cauce(spec: Any, trials: int, parallel: int, root: Path, poll: float | None = None) -> Run:
    from cauce.tune import tune

    home = _fresh_home(root, "cauce")
    cpu, start = _cpu(), time.perf_counter()
    options: dict[str, Any] = {} if poll is None else {"poll_interval": poll}
    result = tune(
        spec,
        trials=trials,
        parallel=parallel,
        history=f"sqlite:///{home / 'history.db'}",
        home=home,
        console=_Quiet(),
        **options,
    )
    wall, cpu = time.perf_counter() - start, _cpu() - cpu
    if not result.ok:
        raise SystemExit(f"error: the cauce study failed: {result.reason}")
    # The driver records when it starts a task (just before the fork) and when it sees it exit.
    with closing(sqlite3.connect(home / "history.db")) as conn:
        spans = list(conn.execute("select started_at, ended_at from tasks"))
    return Run(wall, cpu, spans, result)


def run_optuna(script: Path | None, trials: int, parallel: int, root: Path) -> Run:
    """The peer: Optuna's own loop, each trial a subprocess of ``script``, or the objective
    in-process when ``script`` is None (the floor)."""
    import optuna

    home = _fresh_home(root, "optuna")
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    spans: list[tuple[float, float]] = []

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        began = time.time()
        if script is None:
            value = x * x
        else:
            done = subprocess.run(
                [sys.executable, str(script)],
                env={**env, "CAUCE_PARAMS": json.dumps({"x": x})},
                capture_output=True,
                text=True,
                check=True,
            )
            value = float(done.stdout)
        spans.append((began, time.time()))
        return value

    cpu, start = _cpu(), time.perf_counter()
    study = optuna.create_study(
        storage=optuna.storages.RDBStorage(
            f"sqlite:///{home / 'optuna.db'}", engine_kwargs={"connect_args": {"timeout": 60}}
        ),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.optimize(objective, n_trials=trials, n_jobs=parallel)
    return Run(time.perf_counter() - start, _cpu() - cpu, spans)


def overhead(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    script = root / "trivial.py"
    script.write_text(TRIVIAL, encoding="utf-8")
    spec = _spec(
        [sys.executable, str(script)],
        {"x": {"type": "uniform", "low": 0.0, "high": 1.0}},
        "none",
        root,
    )
    out: dict[str, Any] = {}
    n = args.trials
    for parallel in (1, 2):
        run_cauce(spec, 2, parallel, root)  # warm-up, discarded
        run_optuna(script, 2, parallel, root)
        run_optuna(None, 2, parallel, root)
        runs: dict[str, list[Run]] = {"cauce": [], "optuna": [], "inprocess": []}
        for number in range(args.runs):
            runs["cauce"].append(run_cauce(spec, n, parallel, root))
            runs["optuna"].append(run_optuna(script, n, parallel, root))
            runs["inprocess"].append(run_optuna(None, n, parallel, root))
            mine, peer, floor = (runs[k][-1] for k in ("cauce", "optuna", "inprocess"))
            print(
                f"(a) parallel {parallel} run {number + 1}: {n} trials; wall cauce "
                f"{mine.wall:.2f} s, optuna {peer.wall:.2f} s, in-process {floor.wall:.2f} s; "
                f"dead time per trial cauce {mine.dead_per_trial(parallel) * 1000:.0f} ms, "
                f"optuna {peer.dead_per_trial(parallel) * 1000:.0f} ms; CPU cauce "
                f"{mine.cpu:.2f} s, optuna {peer.cpu:.2f} s",
                flush=True,
            )

        wall = {name: statistics.median(r.wall for r in done) for name, done in runs.items()}
        cpu = {name: statistics.median(r.cpu for r in done) for name, done in runs.items()}
        dead = {
            name: statistics.median(r.dead_per_trial(parallel) for r in done)
            for name, done in runs.items()
        }
        extra_wall = parallel * (wall["cauce"] - wall["optuna"]) / n
        extra_dead = dead["cauce"] - dead["optuna"]
        extra_cpu = (cpu["cauce"] - cpu["optuna"]) / n
        out[f"p{parallel}"] = {
            "cauce_trials_per_s": round(n / wall["cauce"], 3),
            "optuna_trials_per_s": round(n / wall["optuna"], 3),
            "inprocess_trials_per_s": round(n / wall["inprocess"], 3),
            "ratio": round(wall["cauce"] / wall["optuna"], 3),
            "ratio_inprocess": round(wall["cauce"] / wall["inprocess"], 3),
            "slot_s_per_trial": {
                name: round(parallel * value / n, 4) for name, value in wall.items()
            },
            "extra_wall_s_per_trial": round(extra_wall, 4),
            "extra_dead_s_per_trial": round(extra_dead, 4),
            "extra_cpu_s_per_trial": round(extra_cpu, 4),
            "runs_cauce_s": [round(r.wall, 3) for r in runs["cauce"]],
            "runs_optuna_s": [round(r.wall, 3) for r in runs["optuna"]],
        }
        print(
            f"(a) parallel {parallel}: cauce {n / wall['cauce']:.2f} trials/s, optuna+subprocess "
            f"{n / wall['optuna']:.2f} trials/s, ratio {wall['cauce'] / wall['optuna']:.3f} "
            f"(in-process floor {n / wall['inprocess']:.1f} trials/s) "
            f"({extra_wall * 1000:+.0f} ms per trial slot, noisy on a shared machine); "
            f"dead time {extra_dead * 1000:+.0f} ms per trial, CPU {extra_cpu * 1000:+.0f} ms "
            "per trial",
            flush=True,
        )
    return out


def pruning(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    script = root / "curve.py"
    script.write_text(CURVE, encoding="utf-8")
    space = {
        "x": {"type": "uniform", "low": 0.0, "high": 1.0},
        "y": {"type": "uniform", "low": 0.0, "high": 1.0},
    }
    command = [sys.executable, str(script), str(args.steps), str(args.step_cost)]
    figures: dict[str, Any] = {}
    ideal = args.budget * args.steps * args.step_cost / args.parallel
    for name, pruner in (("random", "none"), ("asha", {"type": "asha", "min_steps": 1})):
        spec = _spec(command, space, pruner, root)
        start = time.time()
        run = run_cauce(spec, args.budget, args.parallel, root, args.poll)
        wall, result = run.wall, run.result
        complete = [t for t in result.trials if t.state == "complete"]
        figures[name] = {
            "wall_s": round(wall, 3),
            "complete": len(complete),
            "pruned": sum(1 for t in result.trials if t.state == "pruned"),
            "best": result.best.value,
            "best_at_s": round(result.best.ended_at - start, 3),
            "trials": [(t.value, round(t.ended_at - start, 3)) for t in complete],
        }
        print(
            f"(b) {name}: {args.budget} trials in {wall:.1f} s ({len(complete)} complete, "
            f"{figures[name]['pruned']} pruned), best loss {result.best.value:.6g}",
            flush=True,
        )
    target = figures["random"]["best"]
    reached = [at for value, at in figures["asha"]["trials"] if value <= target + 1e-12]
    asha_time = min(reached) if reached else figures["asha"]["wall_s"]
    ratio = asha_time / figures["random"]["wall_s"]
    print(
        f"(b) ASHA reached the random search's best loss {target:.6g} after {asha_time:.1f} s"
        + ("" if reached else " (NOT reached: this is its whole run)")
        + f"; random search took {figures['random']['wall_s']:.1f} s (at least {ideal:.1f} s "
        f"of trial work); ratio {ratio:.3f}",
        flush=True,
    )
    for name in ("random", "asha"):
        del figures[name]["trials"]
    figures.update(
        reached=bool(reached),
        asha_to_target_s=round(asha_time, 3),
        ratio_to_random_best=round(asha_time / figures["random"]["best_at_s"], 3),
        ideal_random_s=round(ideal, 3),
    )
    return {"ratio": round(ratio, 3), **figures}


def hpo() -> dict[str, Any]:
    """(d): the figures of the default sampler and pruner (TPE and ASHA) on MF-Hartmann."""
    missing = available()
    if missing:
        print(f"(d) skipped: {missing}", flush=True)
        return {"d": {"skipped": missing}}
    found = compare(lambda line: print(line, flush=True))
    default = found["table"][DEFAULT]
    return {
        "d": found,
        "ratio": default["median_time_to_random_best"],
        "reached": default["reached"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="(a) trials per run")
    parser.add_argument("--runs", type=int, default=3, help="(a) runs of each")
    parser.add_argument("--budget", type=int, default=30, help="(b) trials of each search")
    parser.add_argument("--parallel", type=int, default=2, help="(b) trials at once")
    parser.add_argument("--steps", type=int, default=27, help="(b) steps of a full trial")
    parser.add_argument("--step-cost", type=float, default=0.1, help="(b) seconds per step")
    parser.add_argument(
        "--poll", type=float, default=None, help="(b) seconds between reads of the reports"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=quick_default(),
        help="fewer runs and trials (default from CAUCE_BENCH_QUICK)",
    )
    parser.add_argument(
        "--only", choices=("overhead", "pruning", "cost", "hpo"), help="run one part"
    )
    args = parser.parse_args()
    if args.quick:
        args.trials, args.runs, args.budget = 10, 1, 18
    for name in _CLEARED:
        os.environ.pop(name, None)
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    machine = Machine()
    figures: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "python": sys.version.split()[0],
    }
    with tempfile.TemporaryDirectory(prefix="cauce-bench-tune-") as tmp:
        root = Path(tmp)
        if args.only in (None, "overhead"):
            figures["a"] = overhead(args, root)
            # The launcher's cost per trial: the larger of the slot time it adds around trials
            # and the CPU it adds (both robust to other work on the machine, unlike the wall
            # time of whole runs), over parallel 1 and 2, as a fraction of a 1-second trial.
            worst = max(
                figures["a"][p][key]
                for p in ("p1", "p2")
                for key in ("extra_dead_s_per_trial", "extra_cpu_s_per_trial")
            )
            figures["overhead"] = round(max(0.0, worst) / 1.0, 4)
            figures["ratio_subprocess"] = figures["a"]["p1"]["ratio"]
            figures["ratio_inprocess"] = figures["a"]["p1"]["ratio_inprocess"]
        if args.only in (None, "cost"):
            env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
            figures["c"] = cost(args.trials, args.runs, root, env)
            figures["ratio_reuse"] = figures["c"]["ratio_reuse"]
            figures["ratio_warm"] = figures["c"]["ratio_warm"]
        if args.only in (None, "pruning"):
            figures["b"] = pruning(args, root)
            figures["ratio_curve"] = figures["b"]["ratio"]
        if args.only in (None, "hpo"):
            figures.update(hpo())
    figures.update(machine.finish())
    print(json.dumps(figures, separators=(",", ":")))


if __name__ == "__main__":
    main()
