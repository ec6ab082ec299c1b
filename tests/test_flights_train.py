"""The flights example trained by `cauce run` on 2 ranks (PyTorch DDP over Gloo).

One uninterrupted run of examples/flights/train.yaml as it is: its network must reach at least the
test AUC of the scikit-learn baseline it fits, and its saved model must score raw
records as training scored them. Two runs lose a rank to SIGKILL, in the middle of an epoch and
in the middle of writing a checkpoint: each must restart once, resume from the last complete
checkpoint, run every epoch exactly once, and end with the uninterrupted run's metrics.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from flights_fixtures import EXAMPLE, needs_flights
from helpers import cauce

#: train.yaml's, the script's default. With the defaults (seed 0 runs here) the network's test AUC
#: on the development machine was 0.7092, and 0.7140, 0.7100, 0.7124, 0.7137 with seeds 1 to 4;
#: the trees' 0.7078 (deterministic). A run is deterministic on one machine: the same figures.
EPOCHS = 8
_CAUCE_VARS = ("CAUCE_HOME", "CAUCE_HISTORY", "CAUCE_CLUSTER", "CAUCE_GPUS", "CAUCE_LEASE_DIR")

pytestmark = needs_flights


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], ModuleType]]:
    """Imports a module of examples/flights (train.py imports baseline.py from beside it)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield importlib.import_module
    for name in ("train", "baseline"):
        sys.modules.pop(name, None)


def _env(home: Path, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CAUCE_VARS}
    env.update(
        CAUCE_HOME=str(home / "home"),
        CAUCE_LEASE_DIR=str(home / "leases"),
        PYTHONUNBUFFERED="1",
        FLIGHTS_DATA=str(data),
    )
    return env


@dataclass(frozen=True)
class Run:
    stdout: str
    stderr: str
    returncode: int
    job_id: str
    run_dir: Path
    env: dict[str, str]

    @property
    def output(self) -> str:
        return f"{self.stdout}\n{self.stderr}"

    def metrics(self) -> list[dict[str, Any]]:
        done = cauce(["metrics", self.job_id, "--format", "json"], self.env)
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows

    def epochs(self) -> dict[tuple[str, int], list[int]]:
        """The epochs each task reported, per attempt."""
        out: dict[tuple[str, int], list[int]] = {}
        for row in self.metrics():
            if row["name"] == "val_auc":
                out.setdefault((row["task"], row["attempt"]), []).append(row["step"])
        return out

    def by_epoch(self, task: str = "worker-0") -> dict[tuple[int, str], float]:
        """``(epoch, metric) -> value`` as ``task`` reported them (durations left out)."""
        return {
            (row["step"], row["name"]): row["value"]
            for row in self.metrics()
            if row["task"] == task and row["name"] != "seconds"
        }

    def results(self) -> dict[str, Any]:
        return dict(json.loads((self.run_dir / "results.json").read_text(encoding="utf-8")))


def _run(job: Path, env: dict[str, str]) -> Run:
    done = cauce(["run", str(job)], env, timeout=900)
    found = re.search(r"cauce: job (\S+): \d+ tasks, run folder (\S+)", done.stderr)
    assert found, done.stderr
    return Run(done.stdout, done.stderr, done.returncode, found[1], Path(found[2]), env)


def _job(folder: Path, *args: str, command: list[str] | None = None, **fields: Any) -> Path:
    """examples/flights/train.yaml with more arguments (or another command) and fields."""
    spec = yaml.safe_load((EXAMPLE / "train.yaml").read_text(encoding="utf-8"))
    spec["command"] = command or [*spec["command"].split(), *args]
    spec["workdir"] = str(EXAMPLE)
    spec.update(fields)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clean(flights: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """examples/flights/train.yaml, run as it is."""
    return _run(EXAMPLE / "train.yaml", _env(tmp_path_factory.mktemp("clean"), flights))


def _same_metrics(run: Run, clean: Run) -> None:
    """Every epoch's metrics and the test AUC of ``run`` are ``clean``'s.

    A resumed run repeats the uninterrupted one exactly here: each epoch reads the same batches
    (seeded by epoch), the checkpoint restores the weights (trained and averaged), AdamW's state
    and every rank's RNG, the learning rate is a function of the step, and Gloo sums two ranks
    in a fixed order.
    """
    assert run.by_epoch() == pytest.approx(clean.by_epoch(), abs=1e-9)
    assert run.results()["test_auc"] == pytest.approx(clean.results()["test_auc"], abs=1e-9)


@pytest.mark.slow
def test_network_reaches_the_baseline(clean: Run) -> None:
    assert clean.returncode == 0, clean.output
    last = [line for line in clean.stdout.splitlines() if line.startswith("[worker-0] ")][-1]
    printed = re.fullmatch(
        r"\[worker-0\] test AUC: model (0\.\d{4}), baseline \(HistGradientBoostingClassifier\) "
        r"(0\.\d{4}); model saved to (\S+)",
        last,
    )
    assert printed, last
    model_auc, baseline_auc = float(printed[1]), float(printed[2])
    assert model_auc >= baseline_auc, (model_auc, baseline_auc)
    assert model_auc > 0.69  # far above chance: the features carry signal
    results = clean.results()
    assert results["test_auc"] == pytest.approx(model_auc, abs=5e-5)
    assert results["baseline"]["test_auc"] == pytest.approx(baseline_auc, abs=5e-5)
    assert Path(printed[3]) == clean.run_dir / "model"
    # every rank reported every epoch, once
    epochs = list(range(EPOCHS))
    assert clean.epochs() == {("worker-0", 1): epochs, ("worker-1", 1): epochs}
    print(f"\ntest AUC: network {model_auc:.4f}, baseline {baseline_auc:.4f}")


@pytest.mark.slow
def test_saved_model_scores_raw_records_as_training_did(
    clean: Run, flights: Path, example: Callable[[str], ModuleType]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cauce.data import read_manifest
    from cauce.serve import load_model

    assert clean.returncode == 0, clean.output
    manifest = read_manifest(flights)
    model = load_model(clean.run_dir / "model")
    lineage = model.spec.lineage
    assert lineage["dataset"]["content_hash"] == manifest.content_hash
    assert lineage["job_id"] == clean.job_id
    code = (EXAMPLE / "train.py").read_bytes() + (EXAMPLE / "baseline.py").read_bytes()
    assert lineage["code_sha256"] == hashlib.sha256(code).hexdigest()
    pre = model.spec.preprocessing
    assert pre is not None
    assert {f.name: f.vocabulary for f in pre.categorical} == dict(manifest.vocabularies)
    assert len(pre.numeric) == 23 and {f.name for f in pre.numeric}.isdisjoint(
        {"month", "flight", "delayed"}
    )
    # The whole test split as raw records (strings, None for nulls) through the model's own
    # preprocessing: the same AUC as the script's, which fed the model from the training code.
    test = pa.concat_tables(
        [pq.read_table(Path(manifest.root) / f.path) for f in manifest.splits["test"].files]
    )
    scores = model.predict(model.preprocess(test.to_pylist()))["probability"]
    auc = example("baseline").roc_auc(test.column("delayed").to_numpy(), scores)
    assert auc == pytest.approx(clean.results()["test_auc"], abs=1e-9)


@pytest.mark.slow
def test_rank_killed_mid_epoch_resumes_from_checkpoint(
    clean: Run, flights: Path, tmp_path: Path
) -> None:
    job = _job(tmp_path, "--crash-at-epoch", "1", "--crash-rank", "1", "--no-baseline")
    run = _run(job, _env(tmp_path, flights))
    assert run.returncode == 0, run.output
    assert "worker-1 failed first (killed by SIGKILL" in run.stderr
    assert "[worker-1] rank 1: SIGKILL at step" in run.stdout
    assert "step-000000000 (epoch 0 done)" in run.stdout  # resumed after epoch 0
    show = cauce(["show", run.job_id], run.env).stdout
    assert "attempts:  2 (restarts: 1)" in show
    # attempt 1 finished epoch 0 only; attempt 2 did the others: the configured ones, once each
    expected = {(t, 1): [0] for t in ("worker-0", "worker-1")}
    expected |= {(t, 2): list(range(1, EPOCHS)) for t in ("worker-0", "worker-1")}
    assert run.epochs() == expected
    _same_metrics(run, clean)


#: Runs train.py, but in attempt 0 rank 0 is SIGKILLed while writing the checkpoint of epoch
#: $KILL_IN_SAVE_EPOCH, with half of its state file on disk.
_KILL_IN_SAVE = """
import os, runpy, signal, sys
from pathlib import Path

import cauce
from cauce.runtime import checkpoint

write_state = checkpoint._write_state


def write_half_then_die(state, folder):
    fmt, path = write_state(state, folder)
    if cauce.context().attempt == 0 and state["epoch"] == int(os.environ["KILL_IN_SAVE_EPOCH"]):
        with open(path, "r+b") as file:
            file.truncate(path.stat().st_size // 2)
        print(f"half-written checkpoint of epoch {state['epoch']}, killing myself", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return fmt, path


checkpoint._write_state = write_half_then_die
script = Path(sys.argv[1])
sys.argv = sys.argv[1:]
sys.path.insert(0, str(script.parent))
runpy.run_path(str(script), run_name="__main__")
"""


@pytest.mark.slow
def test_rank_killed_mid_checkpoint_resumes_from_the_one_before(
    clean: Run, flights: Path, tmp_path: Path
) -> None:
    wrapper = tmp_path / "kill_in_save.py"
    wrapper.write_text(_KILL_IN_SAVE, encoding="utf-8")
    command = ["python", str(wrapper), str(EXAMPLE / "train.py"), "--no-baseline"]
    job = _job(tmp_path, command=command, env={"KILL_IN_SAVE_EPOCH": 1})
    run = _run(job, _env(tmp_path, flights))
    assert run.returncode == 0, run.output
    assert "worker-0 failed first (killed by SIGKILL" in run.stderr
    # the half-written checkpoint of epoch 1 was never taken for one (the next save cleared
    # it away): the restarted gang took the complete one of epoch 0, then made epoch 1 again
    checkpoints = run.run_dir / "checkpoints"
    assert not list(checkpoints.glob(".tmp-*"))
    assert "half-written checkpoint of epoch 1, killing myself" in run.stdout
    assert "step-000000000 (epoch 0 done)" in run.stdout
    assert sorted(p.name for p in checkpoints.glob("step-*")) == [  # the last 3 are kept
        f"step-{e:09d}" for e in range(EPOCHS - 3, EPOCHS)
    ]
    assert "attempts:  2 (restarts: 1)" in cauce(["show", run.job_id], run.env).stdout
    expected = {(t, 1): [0] for t in ("worker-0", "worker-1")}
    expected |= {(t, 2): list(range(1, EPOCHS)) for t in ("worker-0", "worker-1")}
    assert run.epochs() == expected
    _same_metrics(run, clean)


def test_missing_dataset_names_the_command_that_makes_it(tmp_path: Path) -> None:
    job = _job(tmp_path, restart={"max_restarts": 0})
    run = _run(job, _env(tmp_path, tmp_path / "nowhere"))
    assert run.returncode == 1
    assert "no prepared flights dataset at" in run.stderr
    command = f"cauce prepare examples/flights/features.py:build --out {tmp_path / 'nowhere'}"
    assert command in run.stderr


def test_metrics_agree_with_scikit_learn(example: Callable[[str], ModuleType]) -> None:
    import numpy as np
    from sklearn.metrics import log_loss, roc_auc_score

    baseline = example("baseline")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) + 0.3 * labels, 1)  # many ties
    assert baseline.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    p = rng.random(500)
    assert baseline.log_loss(labels, p) == pytest.approx(log_loss(labels, p))


def test_tuner_params_override_the_command_line(example: Callable[[str], ModuleType]) -> None:
    train = example("train")
    args = train.parse_args(["--lr", "0.01", "--hidden", "32"])
    hp = train.hyperparameters(args, {"hidden": 16.0, "dropout": 0.2})
    assert hp == {**train.DEFAULTS, "lr": 0.01, "hidden": 16, "dropout": 0.2}
    assert isinstance(hp["hidden"], int)
    with pytest.raises(SystemExit, match="unknown hyperparameter 'momentum'"):
        train.hyperparameters(args, {"momentum": 0.9})


def test_trained_model_served_answers_as_offline(clean: Run, flights: Path) -> None:
    """The model the job saved, behind `cauce serve`: tritonclient (metadata, ready, infer) and
    the raw-records endpoint give the model's offline predictions."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cauce.data import read_manifest
    from cauce.serve import load_model
    from test_serve_support import ServerProcess

    tc = pytest.importorskip("tritonclient.http")
    httpx = pytest.importorskip("httpx")
    assert clean.returncode == 0, clean.output
    model_dir = clean.run_dir / "model"
    offline = load_model(model_dir)
    name = offline.spec.name
    manifest = read_manifest(flights)
    test = pa.concat_tables(
        [pq.read_table(Path(manifest.root) / f.path) for f in manifest.splits["test"].files]
    )
    records = test.slice(0, 50).to_pylist()
    for record in records:
        record.pop("delayed")
    arrays = offline.preprocess(records)
    expected = offline.predict(arrays)["probability"]
    with ServerProcess(model_dir) as server:
        client = tc.InferenceServerClient(url=server.hostport)
        try:
            assert client.is_server_ready() and client.is_model_ready(name)
            meta = client.get_model_metadata(name)
            assert [i["name"] for i in meta["inputs"]] == ["categorical", "numeric"]
            inputs = []
            for tensor, datatype in (("categorical", "INT64"), ("numeric", "FP32")):
                item = tc.InferInput(tensor, list(arrays[tensor].shape), datatype)
                item.set_data_from_numpy(arrays[tensor], binary_data=True)
                inputs.append(item)
            result = client.infer(name, inputs)
            np.testing.assert_allclose(
                result.as_numpy("probability"), expected, rtol=1e-5, atol=1e-6
            )
        finally:
            client.close()
        raw = httpx.post(f"{server.url}/v2/models/{name}/predict", json=records, timeout=30)
        assert raw.status_code == 200, raw.text
        np.testing.assert_allclose(
            raw.json()["outputs"]["probability"], expected, rtol=1e-5, atol=1e-6
        )
