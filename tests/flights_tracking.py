"""What the flights pipeline (tests/test_flights_pipeline.py), run with ``tracking:`` pointed at
the session's MLflow server, left there: one parent run, the study's run with a child run per
trial whose metrics are the ones reported, the training job's run with the model, a registered
model version with the lineage, served back by ``cauce serve models:/flights@champion``."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any


def check_pipeline_runs(
    uri: str, env: dict[str, str], state: dict[str, dict[str, Any]], record: dict[str, Any]
) -> float:
    """Check the runs and the registry; returns what the registry's model served for
    ``record``."""
    import mlflow

    from cauce.history import open_store

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("flights")
    assert experiment is not None
    kinds: dict[str, list[Any]] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        kinds.setdefault(run.data.tags.get("cauce.kind", ""), []).append(run)
    assert len(kinds["pipeline"]) == 1, kinds
    parent = kinds["pipeline"][0].info.run_id
    assert kinds["pipeline"][0].info.status == "FINISHED"
    (study,) = kinds["study"]
    assert study.data.tags["mlflow.parentRunId"] == parent
    assert study.data.tags["cauce.study"] == state["tune"]["study"]
    assert len(kinds["trial"]) == 2
    store = open_store(f"sqlite:///{Path(env['CAUCE_HOME']) / 'history.db'}")
    try:
        for trial in kinds["trial"]:
            tags = trial.data.tags
            assert tags["mlflow.parentRunId"] == study.info.run_id
            assert tags["cauce.trial.state"] in ("complete", "pruned")
            job = tags["cauce.job_id"]
            first = store.get_tasks(job)[0].task_id
            reported: dict[str, Counter[tuple[int, float]]] = {}
            for row in store.get_metrics(job, first):
                reported.setdefault(row.name, Counter())[(row.step, row.value)] += 1
            assert "val_auc" in reported
            for name, expected in reported.items():
                history = client.get_metric_history(trial.info.run_id, name)
                assert Counter((m.step, m.value) for m in history) == expected, name
    finally:
        store.close()
    (train,) = [r for r in kinds["job"] if r.data.tags["cauce.job_id"] == state["train"]["job_id"]]
    assert train.data.tags["mlflow.parentRunId"] == parent
    files = {a.path for a in client.list_artifacts(train.info.run_id, "model")}
    assert {"model/cauce-model.json", "model/MLmodel"} <= files
    (version,) = client.search_model_versions("name = 'flights'")
    assert version.run_id == train.info.run_id
    lineage = state["train"]["lineage"]
    assert version.tags["cauce.dataset.content_hash"] == state["prepare"]["outputs"]["content_hash"]
    assert version.tags["cauce.study"] == state["tune"]["study"]
    assert version.tags["cauce.trial"] == str(state["tune"]["best"]["trial"])
    assert version.tags["cauce.code_sha256"] == lineage["code_sha256"]
    client.set_registered_model_alias("flights", "champion", version.version)

    from test_serve_support import ServerProcess

    serve_env = {**env, "MLFLOW_TRACKING_URI": uri}
    with ServerProcess(Path("models:/flights@champion"), env=serve_env) as server:
        body = json.dumps({"records": [record]}).encode()
        request = urllib.request.Request(
            f"{server.url}/v2/models/flights/predict", body, {"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            served = json.loads(answer.read())["outputs"]["probability"][0]
    return float(served)
