"""Part (d) of ``benchmarks/tune.py``: which pruner keeps the winners, on public multi-fidelity
benchmarks with learning curves.

The benchmarks are mf-prior-bench's synthetic MF-Hartmann families (``mfh3`` and ``mfh6``, the
3- and 6-dimensional Hartmann functions whose value at a lower fidelity is a noisy, biased copy
of the full one; ``good`` to ``bad`` say how well low fidelities rank configurations), which
need no data download. mf-prior-bench pins ``numpy<2``, which the project cannot take, so it is
not a declared dependency; its synthetic part runs on NumPy 2. Install it beside the project:

    .venv/bin/python -m pip install --no-deps --target .bench-envs/mfpbench \\
        -r requirements/bench-mfpbench.txt

(``scripts/bench.sh tune`` does it), or give another folder in ``CAUCE_BENCH_MFPBENCH``.

A trial of an instance is a learning curve of ``STEPS`` steps (step ``s`` is the benchmark's
fidelity ``1 + 99 s / (STEPS - 1)``), one time unit each, reported step by step to an Optuna
study with cauce's own sampler and pruner (``cauce.tune._optuna.make_sampler``/``make_pruner``
from a ``tune:`` section), one trial at a time: the clock is the steps spent. Random search runs
``BUDGET`` full trials; every other method runs until it has spent the same time. Per instance
and method: the regret at that equal time (best final value found minus the benchmark's
optimum) and the time at which it first finished a trial at least as good as random search's
best (within 0.5 % of the value range), as a fraction of random search's time.
"""

from __future__ import annotations

import os
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STEPS = 27
BUDGET = 40
TOLERANCE = 0.005  # of the instance's value range: "as good as random's best"
INSTANCES = tuple(
    (f"mfh{dims}_{corr}", seed)
    for dims in (3, 6)
    for corr in ("good", "moderate", "bad")
    for seed in (1, 2, 3)
)
#: name -> (sampler, pruner) as a tune: section says them
METHODS: dict[str, tuple[str, Any]] = {
    "random": ("random", "none"),
    "random+asha1": ("random", {"type": "asha", "min_steps": 1}),
    "random+asha3": ("random", {"type": "asha", "min_steps": 3}),
    "random+asha9": ("random", {"type": "asha", "min_steps": 9}),
    "random+hyperband": ("random", "hyperband"),
    "tpe": ("tpe", "none"),
    "tpe+asha1": ("tpe", {"type": "asha", "min_steps": 1}),
    "tpe+asha3": ("tpe", {"type": "asha", "min_steps": 3}),
    "tpe+asha9": ("tpe", {"type": "asha", "min_steps": 9}),
    "tpe+hyperband": ("tpe", "hyperband"),
}


#: cauce's default sampler and pruner (``tune:`` without them; hyperband's ``max_steps`` from the
#: first finished trial)
DEFAULT = "tpe+hyperband"


def available() -> str:
    """'' when mf-prior-bench imports, else why not."""
    folder = os.environ.get("CAUCE_BENCH_MFPBENCH") or str(ROOT / ".bench-envs" / "mfpbench")
    if os.path.isdir(folder) and folder not in sys.path:
        sys.path.append(folder)  # after .venv's packages: theirs win
    try:
        import mfpbench  # noqa: F401
    except ImportError as exc:
        return f"mf-prior-bench is not installed ({exc}); see benchmarks/_tune_hpo.py"
    return ""


def _curves(name: str, seed: int) -> tuple[Any, float, float]:
    """The benchmark, its optimum and its value range (for the tolerance)."""
    import mfpbench

    bench = mfpbench.get(name, seed=seed)
    optimum = float(bench.query(bench.optimum, at=100).error)
    return bench, optimum, -optimum  # the full-fidelity values are within [optimum, ~0]


def _study(sampler: str, pruner: Any, seed: int) -> Any:
    import optuna

    from cauce.spec import parse_tune
    from cauce.tune._optuna import make_pruner, make_sampler

    tune = parse_tune(
        {
            "objective": {"metric": "value", "direction": "min"},
            "space": {"x": {"type": "uniform", "low": 0, "high": 1}},
            "sampler": {"type": sampler, "seed": seed},
            "pruner": pruner,
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.create_study(
            sampler=make_sampler(tune, 1), pruner=make_pruner(tune), direction="minimize"
        )


def _run(bench: Any, sampler: str, pruner: Any, seed: int, limit: float | None) -> list[tuple]:
    """(time at the end of a complete trial, its final value), until ``BUDGET`` trials (no
    limit) or ``limit`` time units are spent."""
    import optuna
    from optuna.distributions import FloatDistribution

    names = [hp.name for hp in bench.space.values()]
    dists = {n: FloatDistribution(0.0, 1.0) for n in names}
    study = _study(sampler, pruner, seed)
    clock, done, trials = 0.0, [], 0
    while (limit is None and trials < BUDGET) or (limit is not None and clock < limit):
        trial = study.ask(dists)
        config = {n: trial.params[n] for n in names}
        trials += 1
        value, pruned = 0.0, False
        for step in range(STEPS):
            fidelity = 1 + round(99 * step / (STEPS - 1))
            value = float(bench.query(config, at=fidelity).error)
            clock += 1.0
            trial.report(value, step)
            if limit is not None and clock >= limit:
                break
            if trial.should_prune():
                pruned = True
                break
        if pruned or (limit is not None and clock >= limit and step < STEPS - 1):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, value)
        done.append((clock, value))
    return done


def compare(log: Any = print) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    per_method: dict[str, dict[str, list[float]]] = {
        m: {"regret": [], "to_best": [], "reached": []} for m in METHODS
    }
    for name, seed in INSTANCES:
        bench, optimum, span = _curves(name, seed)
        base = _run(bench, "random", "none", seed, None)
        horizon = base[-1][0]
        best = min(v for _, v in base)
        line = []
        for method, (sampler, pruner) in METHODS.items():
            found = base if method == "random" else _run(bench, sampler, pruner, seed, horizon)
            final = min((v for _, v in found), default=float("inf"))
            reach = [t for t, v in found if v <= best + TOLERANCE * span]
            at = min(reach) / horizon if reach else 1.0
            per_method[method]["regret"].append(final - optimum)
            per_method[method]["to_best"].append(at)
            per_method[method]["reached"].append(1.0 if reach else 0.0)
            line.append(f"{method} {at:.2f}{'' if reach else '!'}")
        log(f"(d) {name} seed {seed}: time to random's best / random's time: " + ", ".join(line))
    table = {
        method: {
            "median_regret": round(statistics.median(r["regret"]), 4),
            "median_time_to_random_best": round(statistics.median(r["to_best"]), 3),
            "reached": round(sum(r["reached"]) / len(r["reached"]), 3),
        }
        for method, r in per_method.items()
    }
    log(f"(d) {len(INSTANCES)} instances, {STEPS} steps a trial, random: {BUDGET} trials")
    log(f"(d) {'method':18s} {'regret':>8s} {'time to best':>13s} {'reached':>8s}")
    for method, row in table.items():
        log(
            f"(d) {method:18s} {row['median_regret']:8.4f} "
            f"{row['median_time_to_random_best']:13.3f} {row['reached']:8.2f}"
        )
    return {"instances": len(INSTANCES), "table": table}
