"""Part (c) of ``benchmarks/tune.py``: cauce's own cost per trial with a trial that imports what
real ones import (NumPy and cauce), apart from the imports themselves, and reusable workers.

Three studies of ``--trials`` trials, one at a time, random sampler, same seed, no pruner:

- ``cauce``: ``cauce.tune.tune`` with a trial script (a fresh process per trial);
- ``reuse``: the same trial as a function (``tune.entrypoint``), in cauce's reusable workers;
- ``warm``: the script again, each trial's process forked from a warm start that has imported
  NumPy and cauce once for the study (``preload: [numpy, cauce]``);
- ``loop``: Optuna's ``study.optimize``, each trial one ``subprocess.run`` of the same script.

Each trial writes the time of its first line, of the end of its imports and of its last line.
With the times Optuna records (a trial's ``datetime_complete``, the moment it is told), per
trial, medians over trials:

- decision -> first line: from the previous trial's end in the study (the slot is free, the
  tuner decides) to the first line of this one's script (process start, interpreter start-up,
  cauce's driver and Optuna's ask included; imports not);
- imports: first line -> after ``import numpy, cauce``;
- exit -> recorded: from the script's last line to the trial's end in the study.

``ratio_reuse`` is the wall time of ``reuse`` over that of ``loop`` (aim: at most 0.5, imports
paid once per worker instead of once per trial); ``ratio_warm``, that of ``warm`` over ``loop``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCRIPT = """
import time
first = time.time()
import json, os
import numpy
import cauce
imported = time.time()
x = float(cauce.context().params.get("x", 0.5))
cauce.report(0, loss=float(numpy.square(x)))
print(x * x)
with open(os.environ["BENCH_TIMES"], "a") as f:
    f.write(json.dumps([x, first, imported, time.time()]) + "\\n")
"""

FUNCTION = """
import json, os, time
import numpy
import cauce


def run(params):
    first = time.time()
    x = float(params.get("x", 0.5))
    cauce.report(0, loss=float(numpy.square(x)))
    with open(os.environ["BENCH_TIMES"], "a") as f:
        f.write(json.dumps([x, first, first, time.time()]) + "\\n")
"""


def _spec(root: Path, entrypoint: str | None, preload: list[str] | None = None) -> Any:
    from cauce import parse_job

    tune: dict[str, Any] = {
        "objective": {"metric": "loss", "direction": "min"},
        "space": {"x": {"type": "uniform", "low": 0.0, "high": 1.0}},
        "sampler": {"type": "random", "seed": 0},
        "pruner": "none",
        "max_failures": 0,
    }
    if entrypoint is not None:
        tune["entrypoint"] = entrypoint
    job: dict[str, Any] = {
        "name": "cost",
        "command": [sys.executable, str(root / "cost_trial.py")],
        "workdir": str(root),
        "tune": tune,
    }
    if preload:
        job["preload"] = preload
    return parse_job(job)


def _figures(times_file: Path, study: Any, wall: float) -> dict[str, float]:
    times = {}
    for line in times_file.read_text(encoding="utf-8").splitlines():
        x, first, imported, last = json.loads(line)
        times[x] = (first, imported, last)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    start, imports, end = [], [], []
    for before, trial in zip([None, *trials], trials, strict=False):
        first, imported, last = times[trial.params["x"]]
        done = trial.datetime_complete.timestamp()
        if before is not None:
            start.append(first - before.datetime_complete.timestamp())
        imports.append(imported - first)
        end.append(done - last)
    return {
        "wall_s": round(wall, 3),
        "decision_to_first_line_ms": round(1000 * statistics.median(start), 1),
        "imports_ms": round(1000 * statistics.median(imports), 1),
        "exit_to_recorded_ms": round(1000 * statistics.median(end), 1),
    }


def _run_cauce(
    root: Path, trials: int, entrypoint: str | None, tag: str, preload: list[str] | None = None
) -> dict[str, float]:
    import optuna

    from cauce.tune import tune

    home = root / f"cost-{tag}-{time.monotonic_ns()}"
    home.mkdir()
    os.environ["CAUCE_HOME"] = str(home)
    times = home / "times.jsonl"
    os.environ["BENCH_TIMES"] = str(times)
    url = f"sqlite:///{home / 'history.db'}"
    began = time.perf_counter()
    result = tune(
        _spec(root, entrypoint, preload),
        trials=trials,
        parallel=1,
        history=url,
        home=home,
        console=None,
    )
    wall = time.perf_counter() - began
    if not result.ok:
        raise SystemExit(f"error: the cauce study failed: {result.reason}")
    study = optuna.load_study(study_name="cost", storage=url)
    return _figures(times, study, wall)


def _run_loop(root: Path, trials: int, env: dict[str, str]) -> dict[str, float]:
    import optuna

    home = root / f"cost-loop-{time.monotonic_ns()}"
    home.mkdir()
    times = home / "times.jsonl"

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        done = subprocess.run(
            [sys.executable, str(root / "cost_trial.py")],
            env={**env, "CAUCE_PARAMS": json.dumps({"x": x}), "BENCH_TIMES": str(times)},
            capture_output=True,
            text=True,
            check=True,
        )
        return float(done.stdout)

    study = optuna.create_study(
        storage=optuna.storages.RDBStorage(
            f"sqlite:///{home / 'optuna.db'}", engine_kwargs={"connect_args": {"timeout": 60}}
        ),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    began = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return _figures(times, study, time.perf_counter() - began)


def cost(trials: int, runs: int, root: Path, env: dict[str, str]) -> dict[str, Any]:
    (root / "cost_trial.py").write_text(SCRIPT, encoding="utf-8")
    (root / "cost_fn.py").write_text(FUNCTION, encoding="utf-8")
    kinds = {
        "cauce": lambda: _run_cauce(root, trials, None, "script"),
        "reuse": lambda: _run_cauce(root, trials, "cost_fn:run", "reuse"),
        "warm": lambda: _run_cauce(root, trials, None, "warm", ["numpy", "cauce"]),
        "loop": lambda: _run_loop(root, trials, env),
    }
    for run in kinds.values():
        run()  # warm-up (page cache, first SQLite files), discarded
    found: dict[str, list[dict[str, float]]] = {name: [] for name in kinds}
    for number in range(runs):
        for name, run in kinds.items():
            found[name].append(run())
        line = ", ".join(
            f"{name} {found[name][-1]['wall_s']:.2f} s "
            f"(start {found[name][-1]['decision_to_first_line_ms']:.0f} ms, imports "
            f"{found[name][-1]['imports_ms']:.0f} ms, end "
            f"{found[name][-1]['exit_to_recorded_ms']:.0f} ms)"
            for name in kinds
        )
        print(f"(c) run {number + 1}: {trials} trials one at a time: {line}", flush=True)
    out: dict[str, Any] = {
        name: {key: statistics.median(r[key] for r in done) for key in done[0]}
        for name, done in found.items()
    }
    out["ratio_reuse"] = round(out["reuse"]["wall_s"] / out["loop"]["wall_s"], 3)
    out["ratio_script"] = round(out["cauce"]["wall_s"] / out["loop"]["wall_s"], 3)
    out["ratio_warm"] = round(out["warm"]["wall_s"] / out["loop"]["wall_s"], 3)
    print(
        f"(c) per trial, medians: cauce decision -> first line "
        f"{out['cauce']['decision_to_first_line_ms']:.0f} ms (loop "
        f"{out['loop']['decision_to_first_line_ms']:.0f} ms, reused worker "
        f"{out['reuse']['decision_to_first_line_ms']:.0f} ms), imports "
        f"{out['cauce']['imports_ms']:.0f} ms, exit -> recorded "
        f"{out['cauce']['exit_to_recorded_ms']:.0f} ms (loop "
        f"{out['loop']['exit_to_recorded_ms']:.0f} ms); wall cauce / loop "
        f"{out['ratio_script']:.3f}, with reuse / loop {out['ratio_reuse']:.3f}, warm (preload) "
        f"/ loop {out['ratio_warm']:.3f}",
        flush=True,
    )
    return out
