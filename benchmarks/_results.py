"""The results of ``scripts/bench.sh``: one JSON file and one Markdown table of headline ratios.

    python benchmarks/_results.py --out benchmarks/results [--quick] NAME...

reads what bench.sh left in ``OUT/logs``: for each benchmark NAME, its standard output
(``NAME.log``, whose last line is the benchmark's JSON object) and its exit code and seconds
(``NAME.status``), and for each peer environment that could not be built, the reason
(``setup-ENV.failed``). It writes ``OUT/latest.json`` (every figure) and ``OUT/latest.md``
(the table: every headline ratio with its aim), prints the table, and exits 1 when a
benchmark failed to run (a missed aim is not a failure).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple


class Aim(NamedTuple):
    what: str  # what the figure compares
    aim: str  # the aim as written in benchmarks/README.md or the issues ("" if none)
    met: Callable[[float], bool] | None = None


def _at_most(limit: float) -> Callable[[float], bool]:
    return lambda value: value <= limit


def _at_least(limit: float) -> Callable[[float], bool]:
    return lambda value: value >= limit


#: The headline figures of each benchmark, in table order, with their aims. Other top-level
#: ``ratio*`` figures a benchmark prints are listed after these, without an aim.
AIMS: dict[str, dict[str, Aim]] = {
    "launch": {
        "ratio": Aim("cauce / torchrun, wall time of a 2-rank job", "at most 1", _at_most(1)),
    },
    "ingest": {
        "ratio": Aim("cauce / hand-written pyarrow loop, rows/s", "at least 0.8", _at_least(0.8)),
        "ratio_petastorm": Aim(
            "cauce / Petastorm make_batch_reader, rows/s", "at least 5", _at_least(5)
        ),
        "ratio_ray": Aim("cauce / Ray Data iter_torch_batches, rows/s", ""),
        "ratio_hf": Aim("cauce / HF datasets (Arrow cache), rows/s", ""),
        "ratio_hf_streaming": Aim("cauce / HF datasets streaming, rows/s", ""),
        "ratio_decode_only": Aim("cauce / Arrow decoding alone (the floor), rows/s", ""),
        "ratio_s3": Aim("cauce / pyarrow loop, from s3:// (--s3), rows/s", ""),
        "ratio_s3_native": Aim("cauce native S3 / through s3fs (--s3), rows/s", ""),
    },
    "train_overhead": {
        "ratio": Aim("cauce / torchrun, training samples/s", "at least 0.975", _at_least(0.975)),
        "ratio_mlflow": Aim(
            "cauce with / without MLflow tracking, samples/s", "at least 0.97", _at_least(0.97)
        ),
    },
    "phases": {
        "ratio": Aim(
            "cauce / torchrun, wall time of a 2-rank DDP job with data and checkpoints",
            "at most 1",
            _at_most(1),
        ),
    },
    "tune": {
        "overhead": Aim(
            "cauce's added cost per trial, fraction of a 1 s trial", "under 0.1", lambda v: v < 0.1
        ),
        "ratio": Aim(
            "default pruner / random search, time to random's best (MF-Hartmann)",
            "at most 0.5",
            _at_most(0.5),
        ),
        "reached": Aim(
            "share of MF-Hartmann instances where it reached random's best",
            "at least 0.8",
            _at_least(0.8),
        ),
        "ratio_curve": Aim(
            "ASHA / random search, time to random's best (synthetic curve)",
            "at most 1/3",
            _at_most(1 / 3),
        ),
        "ratio_reuse": Aim(
            "cauce with reusable workers / Optuna loop of subprocesses, wall",
            "at most 0.5",
            _at_most(0.5),
        ),
        "ratio_warm": Aim(
            "cauce with warm starts (preload) / Optuna loop of subprocesses, wall", ""
        ),
        "ratio_subprocess": Aim("cauce / Optuna loop of subprocesses, wall (parallel 1)", ""),
        "ratio_inprocess": Aim("cauce / Optuna in-process (the floor), wall (parallel 1)", ""),
    },
    "serve": {
        "ratio": Aim(
            "batched / unbatched cauce, req/s, heavy model, c=64", "at least 3", _at_least(3)
        ),
        "p99_ratio": Aim(
            "batched / unbatched cauce, p99 latency, same run",
            "at most 1 (p99 no worse)",
            _at_most(1),
        ),
        "ratio_litserve": Aim(
            "cauce / LitServe, req/s, heavy model, c=64", "above 1", lambda v: v > 1
        ),
        "ratio_kserve": Aim("cauce / KServe ModelServer, req/s, heavy model, c=64", ""),
        "ratio_http": Aim("cauce / FastAPI + cauce's batcher, req/s, heavy, c=64", ""),
        "ratio_batching_fastapi": Aim("FastAPI + batcher / FastAPI per request, heavy, c=64", ""),
    },
    "predict": {
        "ratio": Aim(
            "cauce.serve.spark_udf / mlflow.pyfunc.spark_udf, rows/s, local[2]",
            "at least 1.5",
            _at_least(1.5),
        ),
        "ratio_spark_duckdb": Aim("cauce predict, Spark local[2] / DuckDB, rows/s", ""),
    },
    "spark_launch": {
        "ratio": Aim(
            "cauce / TorchDistributor, wall time on Spark standalone", "at most 1", _at_most(1)
        ),
        "ratio_multihost": Aim(
            "cauce / TorchDistributor, wall time, ranks on 2 namespaced hosts",
            "at most 1",
            _at_most(1),
        ),
    },
    "pipeline": {
        "ratio": Aim(
            "cauce run / hand-built stack, wall time of the flights pipeline",
            "at most 0.6 (goal 0.5)",
            _at_most(0.6),
        ),
        "ratio_prepare": Aim("cauce / hand-built, prepare (DuckDB / PySpark local[2])", ""),
        "ratio_tune": Aim("cauce / hand-built, tune (6 trials, Optuna + TorchDistributor)", ""),
        "ratio_train": Aim("cauce / hand-built, train (2 ranks, 8 epochs)", ""),
        "ratio_evaluate": Aim("cauce / hand-built, evaluate (with MLlib's logistic)", ""),
        "ratio_serve": Aim("cauce / hand-built, serve one prediction (FastAPI + uvicorn)", ""),
    },
    "ui": {
        "ratio": Aim(
            "cauce study page / optuna-dashboard study data, 1,000 trials", "at most 1", _at_most(1)
        ),
        "jobs_ms": Aim("cauce jobs page, 10,000 jobs, ms", "under 300", lambda v: v < 300),
        "study_ms": Aim(
            "cauce study page with its charts' data, ms", "under 300", lambda v: v < 300
        ),
    },
}


#: Figures of an option that bench.sh does not pass: no row when they were not measured.
_ONLY_WHEN_ASKED = {"ratio_s3", "ratio_s3_native"}


def _last_json(log: Path) -> dict[str, Any] | None:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    if not lines:
        return None
    try:
        figures = json.loads(lines[-1])
    except ValueError:
        return None
    return figures if isinstance(figures, dict) else None


def collect(name: str, logs: Path) -> dict[str, Any]:
    """One benchmark's outcome: exit code, seconds, and its figures or why there are none."""
    status = (logs / f"{name}.status").read_text().split()
    code, seconds = int(status[0]), int(status[1])
    out: dict[str, Any] = {"exit_code": code, "seconds": seconds}
    figures = _last_json(logs / f"{name}.log") if (logs / f"{name}.log").exists() else None
    if code != 0:
        err = logs / f"{name}.err"
        tail = err.read_text(errors="replace").strip().splitlines()[-5:] if err.exists() else []
        out.update(ok=False, error=f"exit {code}: " + " / ".join(tail))
    elif figures is None or "ratio" not in figures:
        out.update(ok=False, error="its last line is not a JSON object with a 'ratio'")
    else:
        out.update(ok=True, figures=figures)
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan (nothing answered in time)" if math.isnan(value) else f"{value:.3f}"
    return "not measured" if value is None else str(value).replace("|", "\\|")


def _what(key: str) -> str:
    """What a figure without an aim compares, read from its name where the name says it."""
    match = re.fullmatch(r"ratio_(litserve|kserve)_(\w+)_c(\d+)", key)
    if match:
        peer, model, conc = match.groups()
        return f"cauce / {'LitServe' if peer == 'litserve' else 'KServe'}, req/s, {model}, c={conc}"
    return ""


def rows(name: str, outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows for one benchmark."""
    aims = AIMS.get(name, {})
    if not outcome["ok"]:
        return [
            {
                "benchmark": name,
                "figure": "-",
                "value": "FAILED",
                "aim": "",
                "met": None,
                "what": outcome["error"],
            }
        ]
    figures = outcome["figures"]
    keys = list(aims) + sorted(
        k
        for k in figures
        if k.startswith("ratio") and k not in aims and isinstance(figures[k], int | float)
    )
    out = []
    for key in keys:
        if key not in figures or (figures[key] is None and key in _ONLY_WHEN_ASKED):
            continue
        aim = aims.get(key) or Aim(_what(key), "")
        value = figures[key]
        met = aim.met(value) if aim.met is not None and isinstance(value, int | float) else None
        out.append(
            {
                "benchmark": name,
                "figure": key,
                "value": value,
                "aim": aim.aim,
                "met": met,
                "what": aim.what,
            }
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Benchmarks, {report['date']}"
        + (" (quick: smoke runs, not for quoting)" if report["quick"] else ""),
        "",
        f"Machine: {m['cores']} cores, load average {m['load_before']} before, "
        f"{m['load_after']} after" + (" (noisy: above the core count)" if m["noisy"] else ""),
        "",
        "| benchmark | figure | value | aim | met | what | load before → after |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["table"]:
        outcome = report["benchmarks"][row["benchmark"]]
        fig = outcome.get("figures", {})
        load = (
            f"{fig['load_before']} → {fig['load_after']}" + (" noisy" if fig["noisy"] else "")
            if "load_before" in fig
            else ""
        )
        met = {True: "yes", False: "no", None: ""}[row["met"]]
        lines.append(
            f"| {row['benchmark']} | {row['figure']} | {_fmt(row['value'])} | "
            f"{row['aim'] or '—'} | {met} | {_fmt(row['what'])} | {load} |"
        )
    notes = []
    for name, outcome in report["benchmarks"].items():
        for peer, reason in (outcome.get("figures", {}).get("skipped") or {}).items():
            notes.append(f"- {name}: {peer} skipped: {reason}")
    for env, reason in report["setup"].items():
        notes.append(f"- environment {env} could not be built: {reason}")
    if notes:
        lines += ["", *notes]
    lines += [
        "",
        "Ratios: cauce / peer. For times (launch, spark_launch, pipeline, tune's ratio) below 1 "
        "is faster; for rates (ingest, train_overhead, serve) above 1 is faster.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--load-before", type=float, required=True)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    logs = args.out / "logs"
    cores = os.cpu_count() or 1
    after = round(os.getloadavg()[0], 2)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "quick": args.quick,
        "machine": {
            "cores": cores,
            "load_before": args.load_before,
            "load_after": after,
            "noisy": max(args.load_before, after) > cores,
        },
        "setup": {
            p.name[len("setup-") : -len(".failed")]: p.read_text().strip()
            for p in sorted(logs.glob("setup-*.failed"))
        },
        "benchmarks": {name: collect(name, logs) for name in args.names},
    }
    report["table"] = [row for name in args.names for row in rows(name, report["benchmarks"][name])]
    (args.out / "latest.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (args.out / "latest.md").write_text(table)
    print(table)
    return 0 if all(b["ok"] for b in report["benchmarks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
