"""The portal on a big history: 10,000 jobs and a study of 1,000 trials.

A history store in a temporary ``CAUCE_HOME`` gets ``--jobs`` job rows (names, statuses and
times of many kinds) and a study of ``--trials`` trials in Optuna's tables of the same SQLite
file (two parameters, ten intermediate values each; complete, pruned and failed trials), made
through Optuna's own API. Then, on this machine, one after the other, each timed over
``--runs`` requests on a kept-alive connection (medians, after one request to warm up):

- cauce's jobs page (the newest 50), a filtered one (status and part of a name), and the last
  page (the oldest 50);
- cauce's study page: the HTML (a page of 50 trials and the best-value chart's data) and the
  two JSON requests its charts make (intermediate values, parameters): ``study_ms`` is the
  three together, what a person waits for before the page is complete;
- optuna-dashboard (its WSGI app on the same storage, served by the standard library's WSGI
  server) answering ``/api/studies/ID``: the study view's data (every trial with its
  parameters and intermediate values), which its page fetches before it draws anything. Its
  first answer builds an in-memory cache of finished trials; its later answers come from it.
  ``dashboard_first_ms`` is that first answer, measured before the warm-up.

The last line is one JSON object: ``"ratio"`` = cauce's study page (``study_ms``) / optuna-
dashboard's study data, warm medians; below 1, cauce's page is faster. The aim of issue 17 is
under 300 ms for cauce's jobs page and study page on this machine.

    .venv/bin/python benchmarks/ui.py             # about a minute on 2 cores
    .venv/bin/python benchmarks/ui.py --quick     # 2,000 jobs, 200 trials, fewer runs
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from _machine import Machine, quick_default


def _jobs(store: Any, count: int) -> None:
    from cauce.history.store import jobs

    rng = random.Random(0)
    statuses = ["succeeded"] * 6 + ["failed", "killed", "lost", "running"]
    now = time.time()
    rows = []
    for i in range(count):
        start = now - (count - i) * 60.0
        status = rng.choice(statuses)
        rows.append(
            {
                "id": f"job{i:05d}-{rng.randrange(16**4):04x}",
                "name": rng.choice(["flights", "spirals", "bert", "resnet", "gbm"]) + f"-{i % 97}",
                "kind": "job",
                "framework": rng.choice(["pytorch", "tensorflow", "none", "jax"]),
                "status": status,
                "cluster": "local",
                "created_at": start,
                "started_at": start + 1,
                "ended_at": None if status == "running" else start + rng.uniform(5, 500),
                "attempts": 1 + (i % 7 == 0),
                "restarts": int(i % 7 == 0),
                "root_cause": "worker-1 failed first (exit 3)" if status == "failed" else None,
            }
        )
    with store.engine.begin() as conn:
        conn.execute(jobs.insert(), rows)


def _study(url: str, trials: int) -> int:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    optuna.logging.set_verbosity(logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name="big", storage=storage, direction="minimize")
    study.set_user_attr("cauce_metric", "val_loss")
    study.set_user_attr("cauce_direction", "min")
    study.set_user_attr("cauce_job", "flights")
    dists = {
        "lr": FloatDistribution(1e-4, 1.0, log=True),
        "opt": CategoricalDistribution(["sgd", "adam", "adamw"]),
    }
    rng = random.Random(1)
    made = []
    for n in range(trials):
        params = {"lr": 10 ** rng.uniform(-4, 0), "opt": rng.choice(["sgd", "adam", "adamw"])}
        final = abs(params["lr"] - 0.01) + rng.random() * 0.1
        steps = 10 if n % 3 else 3
        curve = {s: final + 1.0 / (s + 1) for s in range(steps)}
        state = optuna.trial.TrialState.COMPLETE if n % 3 else optuna.trial.TrialState.PRUNED
        made.append(
            optuna.trial.create_trial(
                params=params,
                distributions=dists,
                value=final if n % 3 else None,
                intermediate_values=curve,
                state=state,
                user_attrs={"cauce_run": {"job_id": f"big-t{n}"}},
            )
        )
    study.add_trials(made)
    return int(study._study_id)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve_dashboard(url: str) -> tuple[WSGIServer, int]:
    from optuna_dashboard import wsgi

    server = make_server("127.0.0.1", 0, wsgi(url), handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def _timed(port: int, paths: list[str], runs: int) -> tuple[list[float], float]:
    """Milliseconds per run of all ``paths`` on one connection, and the first run's."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    times = []
    for _ in range(runs + 1):
        began = time.perf_counter()
        for path in paths:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise SystemExit(f"{path}: {resp.status} {body[:200]!r}")
        times.append((time.perf_counter() - began) * 1000)
    conn.close()
    return times[1:], times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help="job rows (default 10,000)")
    parser.add_argument("--trials", type=int, default=None, help="trials (default 1,000)")
    parser.add_argument("--runs", type=int, default=None, help="requests timed (default 20)")
    parser.add_argument("--quick", action="store_true", default=quick_default())
    args = parser.parse_args()
    n_jobs = args.jobs or (2000 if args.quick else 10_000)
    n_trials = args.trials or (200 if args.quick else 1000)
    runs = args.runs or (5 if args.quick else 20)
    machine = Machine()
    with tempfile.TemporaryDirectory(prefix="cauce-ui-bench-") as tmp:
        home = Path(tmp)
        url = f"sqlite:///{home / 'history.db'}"
        from cauce.history import HistoryStore
        from cauce.ui import UiServer

        store = HistoryStore(url)
        began = time.perf_counter()
        _jobs(store, n_jobs)
        study_id = _study(url, n_trials)
        print(
            f"history  {n_jobs:,} jobs, a study of {n_trials:,} trials, made in "
            f"{time.perf_counter() - began:.1f} s",
            flush=True,
        )
        ui = UiServer(store, home, port=0).start()
        port = int(ui.url.rsplit(":", 1)[1])
        dash, dash_port = _serve_dashboard(url)
        try:
            figures: dict[str, Any] = {"jobs": n_jobs, "trials": n_trials, "runs": runs}
            cases = {
                "jobs_ms": (port, ["/jobs"]),
                "jobs_filtered_ms": (port, ["/jobs?status=failed&q=flights-1"]),
                "jobs_last_page_ms": (port, [f"/jobs?page={-(-n_jobs // 50)}"]),
                "study_html_ms": (port, ["/studies/big"]),
                "study_ms": (
                    port,
                    ["/studies/big", "/api/studies/big/curves", "/api/studies/big/params"],
                ),
                "dashboard_ms": (dash_port, [f"/api/studies/{study_id}"]),
            }
            for name, (where, paths) in cases.items():
                times, first = _timed(where, paths, runs)
                figures[name] = round(statistics.median(times), 2)
                if name == "dashboard_ms":
                    figures["dashboard_first_ms"] = round(first, 2)
                print(
                    f"{name:<18} median {figures[name]:8.2f} ms  (min {min(times):.2f}, "
                    f"max {max(times):.2f}, first {first:.2f})  {' + '.join(paths)}",
                    flush=True,
                )
        finally:
            ui.close()
            dash.shutdown()
            dash.server_close()
            store.close()
    figures["ratio"] = round(figures["study_ms"] / figures["dashboard_ms"], 3)
    figures["aim_met"] = max(figures["jobs_ms"], figures["study_ms"]) < 300
    print(
        f"ratio    cauce study page / optuna-dashboard study data: {figures['ratio']:.3f}; "
        f"jobs page {figures['jobs_ms']:.1f} ms, study page {figures['study_ms']:.1f} ms "
        f"(aim: under 300 ms each)",
        flush=True,
    )
    figures.update(machine.finish())
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    main()
