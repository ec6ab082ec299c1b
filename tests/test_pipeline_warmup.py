"""Getting the next step ready while one runs (cauce.pipeline._warmup): the evaluate step's
Spark session for its MLlib baselines starts during the step before it, its log in a file, and
nothing started early outlives the pipeline, also when it is stopped with Ctrl-C.

The pipeline: prepare a small dataset on DuckDB, a job that saves a tiny model and then waits
until a Spark JVM runs under the pipeline's process (so the test cannot pass with the session
started by the evaluate step itself), evaluate with ``baselines: [mllib_logistic]``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cauce._util.machine import CpuSample, spare_cores
from cauce.pipeline import _warmup
from cauce.pipeline._warmup import Warmer, Warmup, warmup_mode
from data_fixtures import write_csv, write_module
from helpers import cauce, cauce_popen, gone, write_job

MODEL = '''
"""Save a tiny model of the prepared data, then wait for the warmed Spark JVM."""
import json, os, sys, time
import psutil, torch, cauce, cauce.serve


class Score(torch.nn.Module):
    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(numeric[:, 0])


ctx = cauce.context()
pre = cauce.serve.Preprocessing(
    categorical=(cauce.serve.CategoricalFeature("city", ("Lima", "Lyon", "Oslo", "Pune")),),
    numeric=(
        cauce.serve.NumericFeature("amount", mean=12.5, std=7.0, fill=0.0),
        cauce.serve.NumericFeature("day", mean=14.0, std=8.0, fill=0.0),
    ),
)
cauce.serve.save_model(
    ctx.run_dir / "model", Score(), name="tiny",
    inputs=[cauce.serve.TensorSpec("categorical", "INT64", (-1, 1)),
            cauce.serve.TensorSpec("numeric", "FP32", (-1, 2))],
    outputs=[cauce.serve.TensorSpec("probability", "FP32", (-1,))],
    preprocessing=pre,
)


def spark_jvm():
    """The evaluate step's Spark JVM, started by a process above this one (the pipeline's); not
    an orphan of something else that init adopted."""
    for above in psutil.Process().parents():
        if above.pid == 1:
            break
        for child in above.children():
            try:
                line = " ".join(child.cmdline())
                if "org.apache.spark.deploy.SparkSubmit" in line and "cauce-mllib-baseline" in line:
                    return child.pid
            except psutil.Error:
                pass
    return None


deadline = time.monotonic() + 150
while (jvm := spark_jvm()) is None and time.monotonic() < deadline:
    time.sleep(0.2)
if jvm is None:
    sys.exit("no Spark JVM was started while this step ran")
(ctx.run_dir / "out.json").write_text(json.dumps({"jvm": jvm}))
print("jvm", jvm, flush=True)
if os.environ.get("HOLD"):
    time.sleep(600)
'''


def _write(folder: Path) -> Path:
    write_module(folder, write_csv(folder / "src.csv", 400))
    (folder / "model.py").write_text(MODEL)
    write_job(
        folder,
        """
        name: model
        framework: none
        command: python model.py
        roles: {worker: {resources: {cpus: 0.5}}}
        """,
        name="model.yaml",
    )
    return write_job(
        folder,
        """
        name: warm
        steps:
          prepare:
            function: build_mod.py:build
          train:
            job: model.yaml
            outputs: {model: model, result: out.json}
          evaluate:
            model: ${steps.train.outputs.model}
            dataset: ${steps.prepare.outputs.dataset}
            split: test
            label: big
            baselines: [mllib_logistic]
        """,
        name="pipeline.yaml",
    )


@pytest.fixture
def warm_env(cauce_env: dict[str, str]) -> Iterator[dict[str, str]]:
    pytest.importorskip("pyspark")
    pytest.importorskip("torch")
    yield {**cauce_env, "CAUCE_WARMUP": "now"}


def _jvm(env: dict[str, str]) -> int:
    runs = Path(env["CAUCE_HOME"]) / "runs"
    (out,) = runs.glob("model-*/out.json")
    return int(json.loads(out.read_text())["jvm"])


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_evaluate_steps_spark_starts_during_the_step_before(
    tmp_path: Path, warm_env: dict[str, str]
) -> None:
    pipeline = _write(tmp_path / "p")
    got = cauce(["run", str(pipeline)], warm_env, timeout=360)
    assert got.returncode == 0, got.stderr[-3000:]
    log = Path(warm_env["CAUCE_HOME"]) / "pipelines" / "warm" / "evaluate" / "spark.log"
    assert "training mllib_logistic on Spark (local[2], started during step train in " in got.stderr
    assert f"Spark's log: {log})" in got.stderr
    assert "log4j" in log.read_text()  # Spark's own lines went there...
    assert "log4j" not in got.stderr  # ...not to the terminal
    state = Path(warm_env["CAUCE_HOME"]) / "pipelines" / "warm" / "state" / "evaluate.json"
    compare = json.loads(state.read_text())["result"]["compare"]
    assert compare["MLlib logistic regression"]["train_rows"] > 200
    assert gone([_jvm(warm_env)]), "the warmed JVM outlived the pipeline"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_while_the_next_steps_spark_runs_stops_it(
    tmp_path: Path, warm_env: dict[str, str]
) -> None:
    pipeline = _write(tmp_path / "p")
    running = cauce_popen(["run", str(pipeline)], {**warm_env, "HOLD": "1"})
    runs = Path(warm_env["CAUCE_HOME"]) / "runs"
    try:
        deadline = time.monotonic() + 200
        while not list(runs.glob("model-*/out.json")):  # the job saw the warmed JVM
            assert running.poll() is None, running.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the job saw no Spark JVM in 200 s"
            time.sleep(0.2)
        running.send_signal(signal.SIGINT)
        _, err = running.communicate(timeout=120)
    finally:  # a pipeline that did not stop must not outlive the test
        if running.poll() is None:
            running.kill()
            running.communicate()
    assert running.returncode == 130, err
    assert gone([_jvm(warm_env)]), "the warmed JVM outlived the stopped pipeline"


CLOSES = """
import os, sys, time
from pathlib import Path
from pyspark import SparkContext
from cauce.pipeline._warmup import Warmer, Warmup

warmer = Warmer("now")
warmer.arm(Warmup(spark_app="warm-close", spark_log=Path(sys.argv[1])), during="train")
deadline = time.monotonic() + 150
while warmer._session is None:
    assert time.monotonic() < deadline, "no session in 150 s"
    time.sleep(0.1)
assert SparkContext._active_spark_context is not None
from cauce.cluster.spark._classes import ClassArchive
print("recording" if ClassArchive.recording else "not recording", flush=True)
warmer.close()  # what the runner does when the pipeline ends before the step takes it
print("stopped" if SparkContext._active_spark_context is None else "still running", flush=True)
os._exit(0)  # a running application would keep this process from ending
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_warmed_session_no_step_took_is_stopped_by_close(
    tmp_path: Path, warm_env: dict[str, str]
) -> None:
    """In a process of its own: PySpark keeps its JVM for the process's life, so what close
    must end is the Spark application (its SparkContext), before the process exits. The JVM's
    classes are not saved for later starts (cauce.cluster.spark._classes): it did no step's
    work, and a pipeline that ends would wait seconds for them."""
    cache = tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-c", CLOSES, str(tmp_path / "spark.log")],
        check=False,
        env={**warm_env, "XDG_CACHE_HOME": str(cache)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "stopped", done.stdout + done.stderr[-3000:]
    if done.stdout.startswith("recording"):  # (with Java 17+ and its jcmd) it could have
        assert not list(cache.rglob("*.jsa*")), "a warmed session no step took saved classes"


def test_a_bad_warmup_mode_is_named_with_the_choices(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    pipeline = _write(tmp_path / "p")
    got = cauce(["run", str(pipeline)], {**cauce_env, "CAUCE_WARMUP": "soon"})
    assert got.returncode == 2, got.stderr
    assert "CAUCE_WARMUP must be one of auto, now, off, got 'soon'" in got.stderr
    assert warmup_mode({}) == "auto" and warmup_mode({"CAUCE_WARMUP": " OFF "}) == "off"


def test_spare_cores_from_two_readings_of_the_cpu_times() -> None:
    # (total jiffies, idle jiffies, cpus): 200 jiffies passed on 2 cpus, 150 of them idle
    start = CpuSample(1000, 400, 2)
    assert spare_cores(start, CpuSample(1200, 550, 2)) == pytest.approx(1.5)
    assert spare_cores(start, CpuSample(1200, 400, 2)) == 0.0  # both busy
    assert spare_cores(start, start) == 0.0  # no time passed
    # Under a quota of 1 CPU, of which the cgroup used 0.75 s in 1 s: a quarter is spare,
    # however idle the host's CPUs are.
    quota = CpuSample(1000, 400, 2, wall=10.0, used=5.0, quota=1.0)
    assert spare_cores(quota, CpuSample(1200, 550, 2, 11.0, 5.75, 1.0)) == pytest.approx(0.25)
    assert spare_cores(quota, CpuSample(1200, 550, 2, 11.0, 6.5, 1.0)) == 0.0  # over it


def test_auto_waits_for_a_spare_core_and_off_never_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` imports nothing while the machine is busy, then does once a core has been spare
    for SPARE_SECONDS (3 s here); a step that comes first cancels it."""
    monkeypatch.setattr(_warmup, "SPARE_SECONDS", 3.0)
    clock = {"total": 0.0, "idle": 0.0, "spare": 0.0}

    def reading() -> CpuSample:  # 100 jiffies a reading, ``spare`` of 2 cpus
        clock["total"] += 100
        clock["idle"] += 50 * clock["spare"]
        return CpuSample(clock["total"], clock["idle"], 2)

    warmer = Warmer("auto", reading=reading, settle=0.5)
    warmer.arm(Warmup(modules=("cauce_no_such_module_xyz",)), during="train")
    time.sleep(2.0)  # busy: still waiting
    assert warmer._thread is not None and warmer._thread.is_alive()
    clock["spare"] = 1.0
    spare_from = time.monotonic()
    warmer._thread.join(10)
    assert not warmer._thread.is_alive()
    assert time.monotonic() - spare_from > 2.0  # it waited for the core to stay spare
    warmer.close()

    busy = Warmer("auto", reading=reading, settle=0.5)
    clock["spare"] = 0.0
    busy.arm(Warmup(spark_app="never"), during="train")
    thread = busy._thread
    with contextlib.ExitStack() as stack:
        assert busy.take_spark("never", stack) is None  # the step came first: cancelled
    assert thread is not None and not thread.is_alive()

    off = Warmer("off")
    off.arm(Warmup(spark_app="x"), during="train")
    assert off._thread is None
    off.close()
