"""The flights pipeline end to end: ``cauce run examples/flights/pipeline.yaml`` against the
same flow assembled by hand (``benchmarks/bin/flights_handbuilt.py``: PySpark local[2] for the
features, Optuna with one ``TorchDistributor(local_mode=True)`` run per trial and per-epoch
pruning through its RDB storage, FastAPI + uvicorn for serving; the same trials, epochs,
sampler, seed, start point and pruner).

Runs alternate, cauce first (cauce, hand, cauce, hand, ...), each cauce run with a fresh
``CAUCE_HOME`` (no step cache). A run's total is the wall time of its whole command; cauce's
phases are the seconds its pipeline records per step (``last_run.json``), the hand-built
stack's those it prints. Printed per run as it ends, then the medians per phase (prepare, tune,
train, evaluate, serve) and total, ratio cauce / hand of each (a time: below 1, cauce is
faster), the test AUC of both, and per tuning trial the seconds and epochs of each side (from
the two Optuna storages). The last line is one JSON object; ``ratio`` is the total's ratio.

    .venv/bin/python benchmarks/pipeline.py [--runs 3]
    .venv/bin/python benchmarks/pipeline.py --quick     # 1 run of each
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _machine import Machine, quick_default

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PIPELINE = ROOT / "examples" / "flights" / "pipeline.yaml"
HAND = HERE / "bin" / "flights_handbuilt.py"
PHASES = ("prepare", "tune", "train", "evaluate", "serve")
#: Variables of the calling shell that would change what cauce does.
_CLEARED = ("CAUCE_CLUSTER", "CAUCE_HISTORY", "CAUCE_GPUS", "CAUCE_QUIET", "CAUCE_LEASE_DIR")


def _cauce() -> str:
    beside = Path(sys.executable).with_name("cauce")
    return str(beside) if beside.exists() else "cauce"


def _run(argv: list[str], env: dict[str, str], log: Path) -> float:
    """Wall seconds of a command, its output to ``log``. The command runs in its own process
    group, which is stopped (SIGTERM, then SIGKILL) when it fails or on Ctrl-C: no Spark JVM,
    torchrun or server outlives it."""
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        child = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = child.wait()
        finally:
            _stop_group(child)
    took = time.perf_counter() - started
    if code != 0:
        tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-25:])
        raise SystemExit(f"error: {argv[1]} exited {code}; last lines of {log}:\n{tail}")
    return took


def _stop_group(child: subprocess.Popen[Any]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(child.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        if child.poll() is None:
            child.wait(wait)


def _trials(db: Path, study_prefix: str) -> list[dict[str, Any]]:
    """Each trial of the study: seconds from start to end, epochs reported, its state."""
    rows = []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        query = (
            "SELECT t.trial_id, t.number, t.state, t.datetime_start, t.datetime_complete,"
            " (SELECT COUNT(*) FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id)"
            " FROM trials t JOIN studies s ON s.study_id = t.study_id"
            " WHERE s.study_name LIKE ? ORDER BY t.number"
        )
        for _, number, state, start, end, epochs in con.execute(query, (study_prefix + "%",)):
            seconds = None
            if start and end:  # Optuna's "YYYY-MM-DD HH:MM:SS.ffffff"
                delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
                seconds = delta.total_seconds()
            rows.append({"number": number, "state": state, "seconds": seconds, "epochs": epochs})
    return rows


def _cauce_breakdown(db: Path) -> dict[str, Any]:
    """Where each job's time went, from what cauce records: launch and setup (attempt started
    -> its first epoch began: placement, interpreters, imports, rendezvous, opening the data),
    epochs (rank 0's reported ``seconds``), the tail (last report -> ended: saving, testing,
    exit, recording) and, for a pruned trial, the decision -> ended."""
    jobs: dict[str, Any] = {"trials": [], "train": None}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT id, created_at, ended_at FROM jobs ORDER BY created_at")
        for job, created, ended in list(rows):
            events = dict(
                con.execute(
                    "SELECT kind, MIN(ts) FROM events WHERE job_id = ? AND task_id IS NULL"
                    " GROUP BY kind",
                    (job,),
                ).fetchall()
            )
            reports = con.execute(
                "SELECT ts, value FROM metrics WHERE job_id = ? AND name = 'seconds'"
                " AND task_id = 'worker-0' ORDER BY step",
                (job,),
            ).fetchall()
            if not reports or ended is None:
                continue
            epochs = [v for _, v in reports]
            started = events.get("attempt_started", created)
            entry = {
                "wall": ended - created,
                "launch_setup": reports[0][0] - reports[0][1] - started,
                "epochs": len(epochs),
                "epoch_s": statistics.median(epochs),
                "tail": ended - reports[-1][0],
                "pruned_to_end": ended - events["pruned"] if "pruned" in events else None,
            }
            if "-tune-" in job:
                jobs["trials"].append(entry)
            else:
                jobs["train"] = entry
    return jobs


def _hand_breakdown(raw: dict[str, Any]) -> dict[str, Any]:
    """The hand-built side's breakdown in the same terms (launch and setup together)."""

    def entry(b: dict[str, Any]) -> dict[str, Any]:
        return {
            "wall": b["wall"],
            "launch_setup": b["launch"] + b["setup"],
            "launch": b["launch"],
            "epochs": b["epochs"],
            "epoch_s": b["epoch_s"],
            "tail": b["tail"],
            "pruned_to_end": None,
        }

    return {"trials": [entry(t) for t in raw["trials"]], "train": entry(raw["train"])}


def _breakdown_line(side: str, b: dict[str, Any]) -> str:
    trials = b["trials"]

    def med(key: str, rows: list[dict[str, Any]]) -> str:
        values = [r[key] for r in rows if r.get(key) is not None]
        return f"{statistics.median(values):.1f}" if values else "-"

    train = b["train"] or {}
    return (
        f"  {side} per trial (median of {len(trials)}): launch+setup {med('launch_setup', trials)}"
        f" s, epoch {med('epoch_s', trials)} s, tail {med('tail', trials)} s"
        + (f" (launch alone {med('launch', trials)} s)" if side == "hand" else "")
        + (f", pruned -> ended {med('pruned_to_end', trials)} s" if side == "cauce" else "")
        + f"; train: launch+setup {train.get('launch_setup', 0):.1f} s,"
        f" {train.get('epochs', 0)} epochs of {train.get('epoch_s') or 0:.1f} s,"
        f" tail {train.get('tail', 0):.1f} s"
    )


def run_cauce(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="home-", dir=folder))
    total = _run(
        [_cauce(), "run", str(PIPELINE)], {**env, "CAUCE_HOME": str(home)}, folder / "cauce.log"
    )
    pipeline = home / "pipelines" / "flights"
    last = json.loads((pipeline / "last_run.json").read_text(encoding="utf-8"))
    phases = {s["name"]: s["seconds"] for s in last["steps"]}
    evaluate = json.loads((pipeline / "state" / "evaluate.json").read_text(encoding="utf-8"))
    return {
        "phases": {**{p: phases[p] for p in PHASES}, "total": total},
        "test_auc": _auc_of(evaluate["result"]),
        # of the evaluate step, the seconds MLlib's logistic regression took to train and score
        # (the rest: scoring the model, starting Spark)
        "mllib_s": (evaluate["result"].get("compare") or {})
        .get("MLlib logistic regression", {})
        .get("seconds"),
        "trials": _trials(home / "history.db", "flights-tune"),
        "breakdown": _cauce_breakdown(home / "history.db"),
        "spark": _spark_note(folder / "cauce.log"),
    }


def _spark_note(log: Path) -> str | None:
    """Where the evaluate step's MLlib ran, as it said: ``local[2], started during step train
    in 8.6 s; ...`` when the session was warmed during training, ``local[2]`` when it was
    started by the step itself (the whole start then counts in the step)."""
    marker = " on Spark ("
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("[evaluate] training ") and marker in line:
            return line.split(marker, 1)[1].split(";", 1)[0].rstrip(")")
    return None


def _auc_of(result: dict[str, Any]) -> float | None:
    for key in ("auc", "test_auc"):
        if isinstance(result.get(key), int | float):
            return float(result[key])
    metrics = result.get("metrics")
    if isinstance(metrics, dict):
        return _auc_of(metrics)
    return None


def run_hand(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="hand-", dir=folder))
    log = folder / "hand.log"
    total = _run([sys.executable, str(HAND), "--work", str(work)], env, log)
    last = json.loads(log.read_text(encoding="utf-8").strip().splitlines()[-1])
    return {
        "phases": {**{p: last["phases"][p] for p in PHASES}, "total": total},
        "test_auc": last["test_auc"],
        "mllib_s": last.get("mllib_s"),
        "trials": _trials(work / "optuna.db", "flights-hand"),
        "breakdown": _hand_breakdown(last["breakdown"]),
    }


def _line(side: str, run: dict[str, Any]) -> str:
    phases = "  ".join(f"{p} {run['phases'][p]:6.1f}" for p in PHASES)
    auc = run["test_auc"]
    return (
        f"{side:<6} total {run['phases']['total']:6.1f} s  {phases}  "
        f"test AUC {auc if auc is None else round(auc, 4)}"
        + (f"  (of evaluate, MLlib {run['mllib_s']:.1f} s)" if run.get("mllib_s") else "")
        + (f"\n  {side} evaluate's Spark: {run['spark']}" if run.get("spark") else "")
    )


def _trial_line(side: str, trials: list[dict[str, Any]]) -> str:
    parts = [
        f"#{t['number']} {t['seconds']:.1f}s/{t['epochs']}ep"
        + ("" if t["state"] == "COMPLETE" else "*")
        for t in trials
        if t["seconds"] is not None
    ]
    return f"  {side} trials (* pruned or failed): " + ", ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each side (default 3)")
    parser.add_argument(
        "--quick",
        action="store_true",
        default=quick_default(),
        help="1 run of each: a smoke run (default from $CAUCE_BENCH_QUICK)",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    runs = 1 if args.quick else args.runs
    # SIGTERM as Ctrl-C: the running side's process group is stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("error: stopped by SIGTERM"))
    machine = Machine()
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.setdefault("PYTHONUNBUFFERED", "1")
    results: dict[str, list[dict[str, Any]]] = {"cauce": [], "hand": []}
    with tempfile.TemporaryDirectory(prefix="cauce-bench-pipeline-") as tmp:
        for i in range(runs):
            for side, fn in (("cauce", run_cauce), ("hand", run_hand)):
                folder = Path(tmp, f"{side}-{i}")
                folder.mkdir()
                result = fn(folder, env)
                results[side].append(result)
                print(f"run {i + 1}/{runs} " + _line(side, result), flush=True)
                print(_trial_line(side, result["trials"]), flush=True)
                print(_breakdown_line(side, result["breakdown"]), flush=True)
    medians = {
        side: {p: statistics.median(r["phases"][p] for r in rs) for p in (*PHASES, "total")}
        for side, rs in results.items()
    }
    ratios = {p: medians["cauce"][p] / medians["hand"][p] for p in (*PHASES, "total")}
    aucs = {
        side: statistics.median(r["test_auc"] for r in rs if r["test_auc"] is not None)
        if any(r["test_auc"] is not None for r in rs)
        else None
        for side, rs in results.items()
    }
    print(f"{'median':<10}" + "".join(f"{p:>10}" for p in (*PHASES, "total")))
    for side in ("cauce", "hand"):
        print(f"{side:<10}" + "".join(f"{medians[side][p]:10.1f}" for p in (*PHASES, "total")))
    print(f"{'ratio':<10}" + "".join(f"{ratios[p]:10.2f}" for p in (*PHASES, "total")))
    print(f"test AUC  cauce {aucs['cauce']}, hand-built {aucs['hand']}")
    figures = {
        "ratio": round(ratios["total"], 3),
        **{f"ratio_{p}": round(ratios[p], 3) for p in PHASES},
        "cauce_s": {p: round(v, 2) for p, v in medians["cauce"].items()},
        "hand_s": {p: round(v, 2) for p, v in medians["hand"].items()},
        "auc_cauce": aucs["cauce"],
        "auc_hand": aucs["hand"],
        "runs": runs,
        "quick": args.quick,
        "cauce_runs": results["cauce"],
        "hand_runs": results["hand"],
        **machine.finish(),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
