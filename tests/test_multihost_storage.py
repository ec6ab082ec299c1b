"""Shared storage across hosts: the flights pipeline (examples/flights/pipeline.yaml, made small)
run with ``--cluster spark://...`` from the driver host of a multi-host cluster, every file it
shares on the cluster's S3 store, against the same pipeline on one host.

Every namespace sees this machine's files, so the test proves that the data went through S3:
the prepared dataset, the model and the training results are given as ``s3://`` URIs, nothing
is at their local default places afterwards, and the training ranks (on two hosts) read their
shards from the store.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cauce.history import open_store
from flights_fixtures import EXAMPLE, needs_flights
from helpers import cauce
from multihost import MultiHost
from multihost_fixtures import start

pytestmark = [needs_flights, pytest.mark.slow]

BUCKET = "flights"
EPOCHS = "2"


@pytest.fixture(scope="module")
def cluster() -> Iterator[MultiHost]:
    """Two worker hosts of 2 cores each (two trials of 2 ranks at once), under a tag of its own
    beside the session's cluster."""
    tag = os.environ.get("CAUCE_MULTIHOST_TAG", "") + "g"
    index = int(os.environ.get("CAUCE_MULTIHOST_INDEX", "0")) + 100
    found = start(2, tag=tag, index=index, cores=2, memory="3g")
    try:
        yield found
    finally:
        found.down()


def _copy(folder: Path, shared: str | None) -> Path:
    """examples/flights, small: 2 trials at once, 2 epochs, no baseline; with ``shared`` (an
    ``s3://`` folder) the dataset, the model and the results go there."""
    folder.mkdir(parents=True)
    for name in ("features.py", "train.py", "baseline.py", "train.yaml", "tune.yaml"):
        shutil.copy(EXAMPLE / name, folder / name)
    spec = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text(encoding="utf-8"))
    steps = spec["steps"]
    steps["tune"].update(trials=2, parallel=2, args=["--epochs", EPOCHS])
    train = steps["train"]
    train["args"] = ["--epochs", EPOCHS, "--no-baseline"]
    train["progress"] = {"total": int(EPOCHS), "metric": "val_auc"}
    del steps["evaluate"]["compare"]  # the baseline's AUC: not fitted here
    steps["serve"]["port"] = 0
    if shared:
        # One rank per worker host: each task takes a whole host's 2 cores (Spark would put
        # both on one host when it has room), with 1 thread as on one host, for the same sums.
        job = yaml.safe_load((folder / "train.yaml").read_text(encoding="utf-8"))
        job["roles"]["worker"]["resources"]["cpus"] = 2
        (folder / "train-hosts.yaml").write_text(yaml.safe_dump(job), encoding="utf-8")
        train["job"] = "train-hosts.yaml"
        train["env"].update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        steps["prepare"]["out"] = f"{shared}/dataset"
        train["args"] += ["--model-out", f"{shared}/model", "--results", f"{shared}/results.json"]
        train["outputs"] = {"model": f"{shared}/model", "results": f"{shared}/results.json"}
        # A restarted gang resumes on any host: its checkpoints on the store too.
        train["env"]["CAUCE_CHECKPOINT_DIR"] = f"{shared}/checkpoints"
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _state(home: Path) -> dict[str, dict[str, Any]]:
    folder = home / "pipelines" / "flights" / "state"
    return {p.stem: json.loads(p.read_text())["result"] for p in folder.glob("*.json")}


def _on(cluster: MultiHost, host: str, code: str) -> str:
    done = cluster.run_on(host, [sys.executable, "-c", code], timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _jobs(home: Path, kind: str) -> list[tuple[Any, list[Any]]]:
    store = open_store(f"sqlite:///{home / 'history.db'}")
    try:
        return [(job, store.get_tasks(job.id)) for job in store.list_jobs(kind=kind)]
    finally:
        store.close()


@pytest.mark.timeout(3600)
def test_flights_pipeline_across_hosts_through_s3(
    cluster: MultiHost, tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    # One host: the local cluster, DuckDB, local folders.
    single = _copy(tmp_path / "single", None)
    done = cauce(["run", str(single)], cauce_env, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    alone = _state(Path(cauce_env["CAUCE_HOME"]))

    # Several hosts: Spark from the driver host, everything shared on S3.
    _on(cluster, "d", f"import s3fs; s3fs.S3FileSystem().mkdir({BUCKET!r})")
    shared = f"s3://{BUCKET}/run"
    pipeline = _copy(tmp_path / "multi", shared)
    home = tmp_path / "home-d"
    argv = [sys.executable, "-m", "cauce", "run", str(pipeline), "--cluster", cluster.master]
    env = {
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "CAUCE_HOME": str(home),
        "CAUCE_SPARK_CONF": "spark.executor.memory=1g",  # every Spark session of the run
    }
    done = cluster.run_on("d", argv, env=env, cwd=tmp_path, timeout=2400)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    state = _state(home)

    # prepare: written by Spark's executors to S3, the same rows and files as DuckDB's
    prepared = state["prepare"]["outputs"]
    assert prepared["dataset"] == f"{shared}/dataset"
    assert prepared["rows"] == alone["prepare"]["outputs"]["rows"]
    assert prepared["content_hash"] == alone["prepare"]["outputs"]["content_hash"]
    assert not (home / "pipelines" / "flights" / "prepare").exists()
    listing = json.loads(
        _on(
            cluster,
            "w1",
            "import json, s3fs; "
            f"print(json.dumps(s3fs.S3FileSystem().find('{BUCKET}/run/dataset')))",
        )
    )
    assert f"{BUCKET}/run/dataset/_manifest.json" in listing
    assert any(k.endswith("/train/part-00000.parquet") for k in listing), listing

    # tune: the two trials ran at the same time, their ranks on both worker hosts
    workers = {cluster.hosts[h] for h in cluster.worker_hosts}
    trials = _jobs(home, "trial")
    assert len(trials) == 2, trials
    (first, first_tasks), (second, second_tasks) = trials
    assert first.started_at < second.ended_at and second.started_at < first.ended_at
    trial_hosts = {t.host for t in first_tasks + second_tasks}
    assert trial_hosts == workers, trial_hosts

    # train: 2 ranks on 2 hosts, reading their shards from S3; model and results on S3
    [(train_job, train_tasks)] = _jobs(home, "job")
    assert {t.host for t in train_tasks} == workers, train_tasks
    assert dict(json.loads(train_job.spec)["env"])["FLIGHTS_DATA"] == f"{shared}/dataset"
    train = state["train"]
    assert train["outputs"] == {"model": f"{shared}/model", "results": f"{shared}/results.json"}
    assert train["json"]["results"]["model"] == f"{shared}/model"
    assert not (Path(train["run_dir"]) / "model").exists()
    assert not (Path(train["run_dir"]) / "checkpoints").exists()

    # evaluate and serve: from the model on S3; the AUC is the single host's
    evaluate = state["evaluate"]
    assert json.loads(Path(evaluate["outputs"]["evaluation"]).read_text())["model"] == (
        f"{shared}/model"
    )
    assert evaluate["metrics"]["rows"] == alone["evaluate"]["metrics"]["rows"]
    assert evaluate["metrics"]["auc"] == pytest.approx(
        alone["evaluate"]["metrics"]["auc"], abs=1e-9
    )
    assert train["params"] == alone["train"]["params"]
    assert state["serve"]["outputs"]["model"] == f"{shared}/model"
    served = state["serve"]["prediction"]["probability"][0]
    assert served == pytest.approx(alone["serve"]["prediction"]["probability"][0], rel=1e-6)


def test_local_paths_are_warned_of_on_several_hosts(cluster: MultiHost, tmp_path: Path) -> None:
    """A job's local checkpoint folder and data path: one warning line each at submit; with
    both on S3, none."""
    data = tmp_path / "data"
    data.mkdir()
    _on(cluster, "d", "import s3fs; s3fs.S3FileSystem().mkdir('warned')")
    outputs = []
    for checkpoints, path in (("", str(data)), ("s3://warned/checkpoints", "s3://warned/data")):
        job = tmp_path / f"job{len(outputs)}.yaml"
        env = {"DATA": path, **({"CAUCE_CHECKPOINT_DIR": checkpoints} if checkpoints else {})}
        job.write_text(
            yaml.safe_dump(
                {
                    "name": "warned",
                    "framework": "none",
                    "command": [sys.executable, "-c", "print('ran')"],
                    # a whole host each: placed once both hosts' executors are there
                    "roles": {"worker": {"instances": 2, "resources": {"cpus": 2}}},
                    "env": env,
                }
            ),
            encoding="utf-8",
        )
        argv = [sys.executable, "-m", "cauce", "run", str(job), "--cluster", cluster.master]
        env = {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "CAUCE_HOME": str(tmp_path / "h")}
        done = cluster.run_on("d", argv, env=env, cwd=tmp_path, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout + done.stderr)
    shared = "is local to the driver host; on a cluster of several hosts use shared storage"
    warned = [line for line in outputs[0].splitlines() if shared in line]
    assert len(warned) == 2, outputs[0]
    assert "checkpoint folder " + str(tmp_path / "h" / "runs") in warned[0]
    assert f"DATA={data} is local" in warned[1]
    assert shared not in outputs[1], outputs[1]
