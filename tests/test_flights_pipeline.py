"""The flights pipeline (examples/flights/pipeline.yaml) end to end, with small trial counts:
prepare, tune, train, evaluate, serve; then a second run that skips every step, a changed
feature that reruns everything, and a run killed during tuning that the next run continues.

Each test works on a copy of examples/flights, so that changing features.py touches nothing
else, with its own $CAUCE_HOME (the pipeline's state, the prepared data, the runs, the study).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from flights_fixtures import EXAMPLE, needs_flights
from flights_tracking import check_pipeline_runs
from helpers import cauce, cauce_popen, gone, job_ids
from mlflow_fixtures import HAVE_MLFLOW, MlflowServer

pytestmark = [needs_flights, pytest.mark.slow]

STEPS = ("prepare", "tune", "train", "evaluate", "serve")


def _copy(folder: Path, trials: int, tracking: str = "") -> Path:
    """examples/flights in ``folder``, the study cut to ``trials`` trials, 2 at a time; MLflow
    tracking to the server at ``tracking`` if given."""
    folder.mkdir(parents=True)
    for name in ("features.py", "train.py", "baseline.py", "train.yaml", "tune.yaml"):
        shutil.copy(EXAMPLE / name, folder / name)
    spec = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text(encoding="utf-8"))
    spec["steps"]["tune"].update(trials=trials, parallel=2)
    spec["steps"]["serve"]["port"] = 0  # --serve: a free port, not 8080
    if tracking:
        spec["tracking"] = {"uri": tracking, "experiment": "flights"}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _state(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    folder = Path(env["CAUCE_HOME"]) / "pipelines" / "flights" / "state"
    return {p.stem: json.loads(p.read_text())["result"] for p in folder.glob("*.json")}


def _skipped(stderr: str) -> set[str]:
    return {
        line[1:].split("]", 1)[0]
        for line in stderr.splitlines()
        if re.match(r"^\[\w+\] (skipped: up to date|up to date, nothing ran)", line)
    }


@pytest.mark.timeout(600)  # three pipeline runs, two --serve runs, and the MLflow checks
def test_flights_pipeline_runs_caches_and_reruns_on_a_changed_feature(
    tmp_path: Path, cauce_env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    # The first run tracked in MLflow (when installed): checked below, after cauce's own checks.
    mlflow: MlflowServer | None = request.getfixturevalue("mlflow_server") if HAVE_MLFLOW else None
    pipeline = _copy(tmp_path / "flights", trials=2, tracking=mlflow.uri if mlflow else "")
    first = cauce(["run", str(pipeline)], cauce_env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _skipped(first.stderr) == set()
    state = _state(cauce_env)

    # prepare: the rows of each split (see examples/flights/README.md)
    prepared = state["prepare"]["outputs"]
    assert prepared["rows"] == {"train": 273_355, "validation": 26_971, "test": 27_020}
    # tune: 2 trials done; the best one's values went to the training job
    tune = state["tune"]
    assert tune["trials"].get("complete", 0) + tune["trials"].get("pruned", 0) == 2
    assert set(tune["best"]["params"]) == {"lr", "hidden", "emb_dim", "dropout", "batch_size"}
    train = state["train"]
    assert train["params"] == tune["best"]["params"]
    results = json.loads(Path(train["outputs"]["results"]).read_text())
    assert results["hyperparameters"]["lr"] == pytest.approx(tune["best"]["params"]["lr"])
    assert results["hyperparameters"]["epochs"] == 8
    # the model's lineage: the pipeline, the job, the trial, the dataset, the code
    model_dir = Path(train["outputs"]["model"])
    lineage = json.loads((model_dir / "cauce-model.json").read_text())["lineage"]
    pipeline_lineage = lineage["pipeline"]
    assert pipeline_lineage["job_id"] == train["job_id"]
    assert pipeline_lineage["upstream"]["tune"]["trial"] == tune["best"]["trial"]
    assert pipeline_lineage["upstream"]["tune"]["study"] == tune["study"]
    assert pipeline_lineage["upstream"]["prepare"]["content_hash"] == prepared["content_hash"]
    assert lineage["dataset"]["content_hash"] == prepared["content_hash"]  # train.py's own
    shown = cauce(["show", train["job_id"]], cauce_env)
    assert shown.returncode == 0, shown.stderr
    assert "pipeline.upstream.tune.study" in shown.stdout and tune["study"] in shown.stdout
    # evaluate: the saved model scored from raw records agrees with train.py's own scoring
    evaluate = state["evaluate"]
    assert evaluate["metrics"]["rows"] == 27_020
    assert evaluate["metrics"]["auc"] == pytest.approx(results["test_auc"], abs=1e-6)
    baseline = evaluate["compare"]["gradient-boosted trees"]
    assert baseline["auc"] == pytest.approx(results["baseline"]["test_auc"])
    # serve: the server's answer is the model's offline output for the same record
    from cauce.serve import load_model

    model = load_model(model_dir)
    record = evaluate["example"]["record"]
    offline = float(model.predict(model.preprocess([record]))["probability"][0])
    served = state["serve"]["prediction"]["probability"][0]
    assert served == pytest.approx(offline, rel=1e-6)
    assert evaluate["example"]["prediction"] == pytest.approx(offline, rel=1e-6)
    # MLflow: the runs, the registered model with its lineage, served from the registry
    if mlflow is not None:
        from_registry = check_pipeline_runs(mlflow.uri, cauce_env, state, record)
        assert from_registry == pytest.approx(offline, rel=1e-6)
    # the summary: rows, best parameters, AUC against the baseline, the model, a curl
    out = first.stdout
    assert "train 273,355, validation 26,971, test 27,020 rows" in out
    assert f"best val_auc {tune['best']['value']:.4f}" in out
    assert f"AUC {evaluate['metrics']['auc']:.4f} vs gradient-boosted trees" in out
    mllib = evaluate["compare"]["MLlib logistic regression"]  # same split, same AUC code
    assert 0.55 < mllib["auc"] < 0.95 and mllib["train_rows"] > 50_000
    assert f"vs MLlib logistic regression {mllib['auc']:.4f}" in out
    assert str(model_dir) in out
    assert "curl -s -X POST http://127.0.0.1:8080/v2/models/flights/predict" in out

    jobs = job_ids(cauce_env)
    second = cauce(["run", str(pipeline)], cauce_env, timeout=300)
    assert second.returncode == 0, second.stderr
    assert _skipped(second.stderr) == set(STEPS)
    assert "5 steps, 0 ran, 5 up to date" in second.stdout
    assert job_ids(cauce_env) == jobs  # nothing ran: not a job (nor a trial) more
    assert _state(cauce_env)["train"]["job_id"] == train["job_id"]

    # --serve: the server stays up (a free port here) until Ctrl-C, then stops cleanly
    serving = cauce_popen(["run", str(pipeline), "--serve"], cauce_env)
    assert serving.stderr is not None and serving.stdout is not None
    url = ""
    for line in serving.stderr:
        found = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
        if found:
            url = found[1]
            break
    assert url, "no 'serving on' line"
    body = json.dumps({"records": [record]}).encode()
    request = urllib.request.Request(
        f"{url}/v2/models/flights/predict", body, {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert json.loads(answer.read())["outputs"]["probability"][0] == pytest.approx(served)
    serving.send_signal(signal.SIGTERM)  # as Ctrl-C: the server drains and stops
    _, err = serving.communicate(timeout=60)
    assert serving.returncode == 0, err
    assert "[serve] served and stopped" in err
    # kill -9 of the pipeline: the server it started does not outlive it
    serving = cauce_popen(["run", str(pipeline), "--serve"], cauce_env)
    assert serving.stderr is not None and serving.stdout is not None
    for line in serving.stderr:
        if "serving on http://" in line:
            break
    servers = [
        p.pid for p in psutil.Process(serving.pid).children() if "serve" in " ".join(p.cmdline())
    ]
    assert len(servers) == 1
    os.kill(serving.pid, signal.SIGKILL)
    serving.communicate(timeout=60)
    assert gone(servers, within=45), "the server outlived its pipeline"

    features = pipeline.parent / "features.py"
    code = features.read_text()
    assert "plane_age=(2013 - j.plane_year)" in code
    features.write_text(
        code.replace("plane_age=(2013 - j.plane_year)", "plane_age=(2014 - j.plane_year)")
    )
    third = cauce(["run", str(pipeline)], cauce_env, timeout=900)
    assert third.returncode == 0, third.stderr[-3000:]
    assert _skipped(third.stderr) == set()
    again = _state(cauce_env)
    assert again["prepare"]["outputs"]["content_hash"] != prepared["content_hash"]
    assert again["tune"]["study"] != tune["study"]
    assert again["train"]["job_id"] != train["job_id"]


@pytest.mark.timeout(600)  # two pipeline runs, the first killed during tuning
def test_a_pipeline_killed_during_tuning_continues_the_study(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    pipeline = _copy(tmp_path / "flights", trials=4)
    first = cauce_popen(["run", str(pipeline)], cauce_env)
    assert first.stderr is not None
    study, seen = "", []
    for line in first.stderr:
        seen.append(line)
        found = re.match(r"\[tune\] study (\S+):", line)
        study = found[1] if found else study
        if re.match(r"\[tune\] \[#+\.*\] [1-3]/4 trials", line):
            break
    else:
        first.wait()
        pytest.fail("the pipeline ended before a trial finished:\n" + "".join(seen[-30:]))
    os.kill(first.pid, signal.SIGKILL)  # no chance to clean up: the trials' reapers do
    first.wait()
    assert first.stdout is not None and first.stderr is not None
    first.stdout.close()
    first.stderr.close()
    listed = cauce(["trials", study, "--format", "json"], cauce_env)
    assert listed.returncode == 0, listed.stderr
    before = {t["number"]: t for t in json.loads(listed.stdout)}
    finished = {n for n, t in before.items() if t["state"] in ("complete", "pruned")}
    assert finished, before

    second = cauce(["run", str(pipeline)], cauce_env, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "prepare" in _skipped(second.stderr)
    assert f"[tune] study {study}:" in second.stderr  # the same study, continued
    after = {
        t["number"]: t
        for t in json.loads(cauce(["trials", study, "--format", "json"], cauce_env).stdout)
    }
    for number in finished:  # what was done stays done
        assert after[number]["state"] == before[number]["state"]
        assert after[number]["value"] == before[number]["value"]
    done = [t for t in after.values() if t["state"] in ("complete", "pruned")]
    assert len(done) == 4, after
    assert _state(cauce_env)["serve"]["prediction"]["probability"]
