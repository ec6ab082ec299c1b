"""Pipelines (`cauce run pipeline.yaml`): the file's checks, caching by content, --force, a
failing step, lineage. A small pipeline without torch: prepare on DuckDB, then two jobs of
framework none that read what the earlier steps made. The flights pipeline (tune, train,
evaluate, serve) is in test_flights_pipeline.py."""

from __future__ import annotations

import json
import re
import textwrap
import time
from pathlib import Path

import pytest

import cauce as cauce_api
from cauce.pipeline import load_pipeline, run_pipeline
from data_fixtures import write_csv
from helpers import cauce, job_ids, match_schema, write_job
from pipeline_fixtures import statuses as _statuses
from pipeline_fixtures import write_small as _write


def _state(env: dict[str, str], step: str) -> dict:
    path = Path(env["CAUCE_HOME"]) / "pipelines" / "small" / "state" / f"{step}.json"
    return json.loads(path.read_text())


def test_runs_then_skips_what_did_not_change(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    pipeline = _write(tmp_path / "p")
    first = cauce(["run", str(pipeline)], cauce_env)
    assert first.returncode == 0, first.stderr
    assert _statuses(first.stderr) == {"prepare": "ran", "train": "ran", "after": "ran"}
    train = _state(cauce_env, "train")["result"]
    after = _state(cauce_env, "after")["result"]
    assert train["json"]["result"]["rows"] == 30  # ids not divisible by 4, of 40
    # The reference reached the job as cauce.context().params, with its type.
    assert after["json"]["result"] == {"rows": 10, "params": {"train_rows": 30}}
    assert "pipeline small: 3 steps, 3 ran, 0 up to date" in first.stdout

    jobs = job_ids(cauce_env)
    second = cauce(["run", str(pipeline), "--format", "json"], cauce_env)
    assert second.returncode == 0, second.stderr
    assert _statuses(second.stderr) == {
        "prepare": "skipped",
        "train": "skipped",
        "after": "skipped",
    }
    summary = json.loads(second.stdout)  # the summary, for scripts
    match_schema(summary, "pipeline")
    assert summary["pipeline"] == "small"
    assert [(s["name"], s["status"]) for s in summary["steps"]] == [
        ("prepare", "skipped"),
        ("train", "skipped"),
        ("after", "skipped"),
    ]
    assert summary["steps"][2]["result"]["job_id"] == after["job_id"]
    assert _state(cauce_env, "after")["result"]["job_id"] == after["job_id"]
    assert job_ids(cauce_env) == jobs  # nothing ran: not a job more in the history


def test_changed_code_reruns_that_step_and_the_ones_after(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    pipeline = _write(tmp_path / "p")
    assert cauce(["run", str(pipeline)], cauce_env).returncode == 0
    jobs = {s: _state(cauce_env, s)["result"]["job_id"] for s in ("train", "after")}
    count = tmp_path / "p" / "count.py"
    count.write_text(count.read_text() + "\n# a change\n")
    again = cauce(["run", str(pipeline)], cauce_env)
    assert again.returncode == 0, again.stderr
    assert _statuses(again.stderr) == {"prepare": "skipped", "train": "ran", "after": "ran"}
    assert all(_state(cauce_env, s)["result"]["job_id"] != jobs[s] for s in jobs)


def test_changed_data_reruns_everything(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    pipeline = _write(tmp_path / "p")
    assert cauce(["run", str(pipeline)], cauce_env).returncode == 0
    write_csv(tmp_path / "p" / "src.csv", 80)  # the input the preparation reads
    again = cauce(["run", str(pipeline)], cauce_env)
    assert again.returncode == 0, again.stderr
    assert _statuses(again.stderr) == {"prepare": "ran", "train": "ran", "after": "ran"}
    assert _state(cauce_env, "after")["result"]["json"]["result"]["params"] == {"train_rows": 60}


def test_force_reruns_from_a_step(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    pipeline = _write(tmp_path / "p")
    assert cauce(["run", str(pipeline)], cauce_env).returncode == 0
    forced = cauce(["run", str(pipeline), "--force", "after"], cauce_env)
    assert forced.returncode == 0, forced.stderr
    assert _statuses(forced.stderr) == {"prepare": "skipped", "train": "skipped", "after": "ran"}
    unknown = cauce(["run", str(pipeline), "--force", "trian"], cauce_env)
    assert unknown.returncode == 2  # refused, nothing ran (docs/scripting.md)
    expected = "error: --force names no step of small: 'trian' (steps: prepare, train, after)\n"
    assert unknown.stderr == expected
    serving = cauce(["run", str(pipeline), "--serve"], cauce_env)
    assert serving.returncode == 2
    assert serving.stderr == "error: --serve needs a serve step; pipeline small has none\n"


def test_a_failing_step_stops_the_pipeline_and_the_next_run_starts_there(
    tmp_path: Path, cauce_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = _write(tmp_path / "p")
    count = tmp_path / "p" / "count.py"
    good = count.read_text()
    count.write_text(good.replace('print("counted", rows)', 'sys.exit("no good: " + sys.argv[1])'))
    failed = cauce(["run", str(pipeline)], cauce_env)
    assert failed.returncode == 1
    assert "error: job count-" in failed.stderr and "no good: train" in failed.stderr
    assert _statuses(failed.stderr) == {"prepare": "ran"}
    assert not (Path(cauce_env["CAUCE_HOME"]) / "pipelines/small/state/train.json").exists()

    # The same from Python: GangFailed, with a note that names the step.
    for name in ("CAUCE_HOME", "CAUCE_LEASE_DIR"):
        monkeypatch.setenv(name, cauce_env[name])
    with pytest.raises(cauce_api.GangFailed, match="no good: train") as raised:
        run_pipeline(load_pipeline(pipeline))
    assert raised.value.__notes__ == ["in step train of pipeline small"]

    count.write_text(good)
    again = cauce(["run", str(pipeline)], cauce_env)
    assert again.returncode == 0, again.stderr
    assert _statuses(again.stderr) == {"prepare": "skipped", "train": "ran", "after": "ran"}


def test_a_missing_output_is_an_error(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    pipeline = _write(tmp_path / "p")
    pipeline.write_text(pipeline.read_text().replace("result: out.json", "result: nope.json", 1))
    got = cauce(["run", str(pipeline)], cauce_env)
    assert got.returncode == 1
    assert "step train: job count-" in got.stderr
    assert "did not write outputs.result: nothing at" in got.stderr
    assert "nope.json" in got.stderr


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            "  prep:\n    function: x.py:build\n",
            "steps.prep has no kind: set kind: to one of prepare, tune, run, evaluate, serve, "
            "package, stream (a step named 'prep' needs one)",
        ),
        (
            "  train:\n    job: job.yaml\n    parms: {a: 1}\n",
            "steps.train.parms is not a setting of a run step; did you mean 'params'?",
        ),
        ("  train:\n    args: [x]\n", "steps.train.job is required for a run step"),
        (  # said once: not also "job is required"
            "  train:\n    jbo: job.yaml\n",
            "steps.train.jbo is not a setting of a run step; did you mean 'job'?",
        ),
        (
            "  a:\n    kind: frobnicate\n",
            "steps.a.kind must be one of prepare, tune, run, evaluate, serve, package, stream, "
            "got 'frobnicate'",
        ),
        (
            "  train:\n    job: job.yaml\n    env:\n      X: ${steps.prepare.outputs.dataset}\n"
            "  prepare:\n    function: x.py:build\n",
            "refers to ${steps.prepare.outputs.dataset}, but step 'prepare' comes later: "
            "steps run in file order",
        ),
        (
            "  train:\n    job: job.yaml\n    params: ${steps.tune.best.params}\n",
            "there is no step 'tune' (steps: none)",
        ),
        (
            "  prepare:\n    function: x.py:build\n  train:\n    job: job.yaml\n"
            "    params: ${steps.prepare.best.params}\n",
            "a prepare step has ${steps.prepare.outputs...}",
        ),
        (
            "  train:\n    job: job.yaml\n    env: {X: $steps.a}\n    args: ['${steps}']\n",
            "is not ${steps.NAME.PATH}",
        ),
        (
            "  train:\n    job: job.yaml\n    outputs: {model: ../elsewhere}\n",
            "must be a path inside the job's run folder",
        ),
    ],
)
def test_bad_pipelines_are_refused_before_anything_runs(
    tmp_path: Path, cauce_env: dict[str, str], steps: str, message: str
) -> None:
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("name: bad\nsteps:\n" + steps)
    got = cauce(["run", str(pipeline)], cauce_env)
    assert got.returncode == 2, got.stderr
    assert message in got.stderr, got.stderr
    assert got.stderr.count("\n") == 1 and got.stderr.startswith("error: ")
    assert not (Path(cauce_env["CAUCE_HOME"]) / "pipelines").exists()


def test_a_pipeline_without_a_name_is_told_to_add_one(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("steps:\n  train:\n    job: job.yaml\n")
    got = cauce(["run", str(pipeline)], cauce_env)
    assert got.returncode == 2, got.stderr
    assert got.stderr.startswith(f"error: {pipeline}: name is required: add name: with 1-63 ")
    assert "None" not in got.stderr


def test_job_options_and_pipeline_options_are_not_mixed(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    pipeline = _write(tmp_path / "p")
    dry = cauce(["run", "--dry-run", str(pipeline)], cauce_env)
    assert dry.returncode == 2
    assert "--dry-run is for job files; run a step's job file with --dry-run" in dry.stderr
    job = tmp_path / "p" / "job.yaml"
    plan = cauce(["run", "--dry-run", "--format", "json", str(job)], cauce_env)
    assert (plan.returncode, plan.stdout) == (2, "")
    assert plan.stderr == (
        "error: --format json is how a job ended; --dry-run prints its plan as text\n"
    )
    forced = cauce(["run", str(job), "--force", "train"], cauce_env)
    assert forced.returncode == 2
    assert f"--force is for pipeline files (with steps:); {job} is a job file" in forced.stderr


def test_one_run_at_a_time(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    import fcntl
    import os

    pipeline = _write(tmp_path / "p")
    home = Path(cauce_env["CAUCE_HOME"]) / "pipelines" / "small"
    home.mkdir(parents=True)
    with (home / "lock").open("a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        held.write(str(os.getpid()))
        held.flush()
        got = cauce(["run", str(pipeline)], cauce_env)
    assert got.returncode == 1
    assert f"pipeline small is already running (pid {os.getpid()})" in got.stderr


def test_references_resolve_to_values_and_into_strings() -> None:
    from cauce.pipeline._refs import resolve

    results = {"a": {"outputs": {"n": 3, "path": "/d"}, "best": {"params": {"lr": 0.1}}}}
    assert resolve("${steps.a.best.params}", results, "x") == {"lr": 0.1}
    assert resolve(" ${steps.a.outputs.n} ", results, "x") == 3
    assert resolve("--data=${steps.a.outputs.path}/t", results, "x") == "--data=/d/t"
    assert resolve(["${steps.a.outputs.n}"], results, "x") == [3]
    assert resolve("p=${steps.a.best.params}", results, "x") == 'p={"lr": 0.1}'
    with pytest.raises(Exception, match=r"\$\{steps.a.outputs.m\} does not exist: "):
        resolve("${steps.a.outputs.m}", results, "steps.b.env")


def test_lineage_reaches_cauce_show_and_the_model_is_packaged(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """A model folder among a run step's outputs gets the pipeline's lineage; `cauce show`
    prints it for the job and for the folder."""
    folder = tmp_path / "p"
    _write(folder)
    (folder / "model.py").write_text(
        textwrap.dedent(
            """
            import torch, cauce, cauce.serve

            class Twice(torch.nn.Module):
                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    return x * 2

            out = cauce.context().run_dir / "model"
            cauce.serve.save_model(
                out, Twice(), name="twice",
                inputs=[cauce.serve.TensorSpec("x", "FP32", (-1,))],
                outputs=[cauce.serve.TensorSpec("y", "FP32", (-1,))],
                lineage={"made_by": "model.py"},
            )
            """
        )
    )
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
    pipeline = write_job(
        folder,
        """
        name: small
        steps:
          prepare:
            function: build_mod.py:build
          train:
            job: model.yaml
            env:
              DATA: ${steps.prepare.outputs.dataset}
            outputs: {model: model}
          package:
            model: ${steps.train.outputs.model}
        """,
        name="pipeline.yaml",
    )
    got = cauce(["run", str(pipeline)], cauce_env)
    assert got.returncode == 0, got.stderr
    package = _state(cauce_env, "package")["result"]["outputs"]["package"]
    assert (Path(package) / "Dockerfile").is_file()
    assert f"  package   {package}" in got.stdout
    train = _state(cauce_env, "train")["result"]
    prepare = _state(cauce_env, "prepare")["result"]
    spec = json.loads((Path(train["outputs"]["model"]) / "cauce-model.json").read_text())
    lineage = spec["lineage"]
    assert lineage["made_by"] == "model.py"  # what the job saved is kept
    assert lineage["pipeline"]["job_id"] == train["job_id"]
    assert (
        lineage["pipeline"]["upstream"]["prepare"]["content_hash"]
        == (prepare["outputs"]["content_hash"])
    )
    assert len(lineage["pipeline"]["code_sha256"]) == 64
    for target in (train["job_id"], train["outputs"]["model"]):
        shown = cauce(["show", target], cauce_env)
        assert shown.returncode == 0, shown.stderr
        assert re.search(rf"\n  pipeline\.job_id +{train['job_id']}\n", shown.stdout)
        assert prepare["outputs"]["content_hash"] in shown.stdout


def test_the_pipeline_doc_shows_the_example_file() -> None:
    """docs/pipeline.md's file is examples/flights/pipeline.yaml without its comments."""
    from helpers import ROOT

    doc = (ROOT / "docs" / "pipeline.md").read_text(encoding="utf-8")
    shown = doc.split("# examples/flights/pipeline.yaml, without its comments\n", 1)[1]
    shown = shown.split("```", 1)[0]
    example = (ROOT / "examples" / "flights" / "pipeline.yaml").read_text(encoding="utf-8")
    kept = [
        line for line in example.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    assert shown.splitlines() == kept


def test_ctrl_c_during_a_job_step_stops_it_and_the_next_run_redoes_it(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    import signal

    from helpers import cauce_popen

    pipeline = _write(tmp_path / "p")
    count = tmp_path / "p" / "count.py"
    good = count.read_text()
    count.write_text(
        good.replace(
            'print("counted", rows)',
            'print("counted", rows, flush=True)\nimport time; time.sleep(600)',
        )
    )
    running = cauce_popen(["run", str(pipeline)], cauce_env)
    assert running.stderr is not None
    for line in running.stderr:
        if "attempt 1: started 1 tasks" in line:
            break
    time.sleep(1.0)
    running.send_signal(signal.SIGINT)
    try:
        _, err = running.communicate(timeout=60)
    finally:  # a pipeline that did not stop must not outlive the test
        if running.poll() is None:
            running.kill()
            running.communicate()
    assert running.returncode == 130, err
    assert "[train] failed or stopped" in err
    assert not (Path(cauce_env["CAUCE_HOME"]) / "pipelines/small/state/train.json").exists()
    count.write_text(good)
    again = cauce(["run", str(pipeline)], cauce_env)
    assert again.returncode == 0, again.stderr
    assert _statuses(again.stderr) == {"prepare": "skipped", "train": "ran", "after": "ran"}
