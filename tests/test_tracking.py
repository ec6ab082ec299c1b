"""MLflow tracking (cauce.tracking) against a real ``mlflow server`` (tests/mlflow_fixtures.py):
the spec's ``tracking:`` section, an outage in the middle of a job that the job survives, and
``cauce mlflow sync`` replaying what was not sent. The flights pipeline's runs, registered model
and ``cauce serve models:/...`` are checked in tests/test_flights_pipeline.py."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import cauce, cauce_popen, py, write_job
from mlflow_fixtures import MlflowServer, needs_mlflow


def test_the_tracking_section_is_validated_and_the_spec_wins_over_the_environment() -> None:
    from cauce.errors import SpecError
    from cauce.spec import TrackingSpec, parse_job
    from cauce.tracking import Target, resolve_target

    base = {"command": "true"}
    with pytest.raises(SpecError, match=r"tracking\.urii is not a known field; did you mean 'uri'"):
        parse_job({**base, "tracking": {"urii": "http://x"}})
    with pytest.raises(SpecError, match=r"tracking\.experiment must be a non-empty string"):
        parse_job({**base, "tracking": {"experiment": 3}})
    spec = parse_job({**base, "tracking": {"uri": "http://spec:5000"}})
    env = {"MLFLOW_TRACKING_URI": "http://env:5000", "MLFLOW_EXPERIMENT_NAME": "from-env"}
    assert resolve_target(spec.tracking, env, "job") == Target("http://spec:5000", "from-env")
    assert resolve_target(None, env, "job") == Target("http://env:5000", "from-env")
    assert resolve_target(None, {}, "job") is None
    assert resolve_target(TrackingSpec(enabled=False), env, "job") is None
    assert parse_job({**base, "tracking": False}).tracking == TrackingSpec(enabled=False)
    with pytest.raises(SpecError, match=r"tracking.uri is not set and neither is \$MLFLOW"):
        resolve_target(TrackingSpec(experiment="e"), {}, "job")


def test_without_mlflow_jobs_run_and_tracking_asks_for_the_extra(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """mlflow blocked from import: a job without tracking runs; one with it fails at once."""
    plain = write_job(tmp_path, "name: plain\ncommand: 'true'\n", "plain.yaml")
    tracked = write_job(
        tmp_path, "name: tracked\ncommand: 'true'\ntracking: {uri: http://127.0.0.1:9}\n"
    )
    blocked = "import sys; sys.modules['mlflow'] = None; from cauce.cli.main import main; "
    for job, code in ((plain, 0), (tracked, 1)):
        argv = [sys.executable, "-c", blocked + f"sys.exit(main(['run', {str(job)!r}]))"]
        done = subprocess.run(
            argv, env=cauce_env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == code, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: MLflow tracking needs the mlflow client, which is not installed: "
        "pip install 'cauce[mlflow]'"
    )


@needs_mlflow
@pytest.mark.slow
def test_a_tracking_outage_warns_once_and_sync_replays_what_was_not_sent(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    import mlflow

    server = MlflowServer(tmp_path / "mlflow")
    server.start()
    try:
        gate = tmp_path / "gate"
        job = write_job(
            tmp_path,
            f"""
            name: outage
            command: {py("gated_reports.py", gate)}
            tracking: {{uri: "{server.uri}", experiment: outage}}
            """,
        )
        # The spec's uri wins over the environment's (which points at nothing).
        env = {**cauce_env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
        running = cauce_popen(["run", str(job)], env)
        client = mlflow.MlflowClient(server.uri)
        deadline = time.monotonic() + 90
        run = None
        while time.monotonic() < deadline and running.poll() is None:
            experiment = client.get_experiment_by_name("outage")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if runs and len(client.get_metric_history(runs[0].info.run_id, "loss")) == 3:
                run = runs[0]
                break
            time.sleep(0.3)
        assert run is not None, "the first 3 reports never reached MLflow"
        server.stop(kill=True)  # the outage, in the middle of the job
        gate.touch()
        _, err = running.communicate(timeout=120)
        assert running.returncode == 0, err
        warnings = [line for line in err.splitlines() if "warning" in line.lower()]
        assert len(warnings) == 1, err
        assert "warning: MLflow tracking" in warnings[0]
        job_id = re.search(r"job (\S+): 1 tasks", err)[1]  # type: ignore[index]
        assert f"cauce mlflow sync {job_id}" in warnings[0]
        spool = Path(cauce_env["CAUCE_HOME"]) / "runs" / job_id / "mlflow-spool.jsonl"
        assert spool.is_file()

        server.start()  # the same store, the same port
        synced = cauce(["mlflow", "sync", job_id], cauce_env, timeout=120)
        assert synced.returncode == 0, synced.stderr
        assert not spool.exists() and spool.with_name(spool.name + ".synced").exists()
        run = client.get_run(run.info.run_id)
        history = client.get_metric_history(run.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in history) == [(s, 1.0 / (s + 1)) for s in range(6)]
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["cauce.job_id"] == job_id and tags["cauce.status"] == "succeeded"
        assert tags["cauce.attempts"] == "1" and tags["cauce.cluster"] == "local"
        assert run.data.params["spec.name"] == "outage"
        logs = [a.path for a in client.list_artifacts(run.info.run_id, "logs")]
        assert logs == ["logs/worker-0.log"]
    finally:
        server.stop()


@pytest.mark.slow
def test_a_spool_cut_by_a_crash_is_mended_and_an_unwritable_spool_is_warned_of_once(
    tmp_path: Path,
) -> None:
    from cauce.tracking import Tracker
    from cauce.tracking._sync import _read
    from cauce.tracking.api import Target

    spool = tmp_path / "spool.jsonl"
    spool.write_text('{"op":"target","uri":"u","experiment":"e","run_id":null}\n{"op":"batc')
    said: list[str] = []
    target = Target("http://127.0.0.1:9", "e")
    tracker = Tracker(target, spool, name="r", tags={}, warn=said.append)
    tracker.close()  # not ended by its owner: it ends failed
    ops, skipped = _read(spool)  # the cut line is left out, the new run's lines are whole
    assert skipped == 1 and [op["op"] for op in ops] == ["target", "target", "create", "end"]
    assert ops[-1]["status"] == "FAILED"
    assert tracker.failures == 2 and len(said) == 1 and "127.0.0.1:9" in said[0]
    glued = spool.read_text().replace('"op":"batc\n', '"op":"batc')  # as before the mending
    spool.write_text(glued)
    ops, skipped = _read(spool)
    assert skipped == 1 and [op["op"] for op in ops] == ["target", "target", "create", "end"]

    gone = tmp_path / "gone" / "spool.jsonl"
    (tmp_path / "gone").write_text("a file where the spool's folder should be")
    said.clear()
    tracker = Tracker(target, gone, name="r", tags={}, warn=said.append)
    for step in range(3):
        tracker.log([("loss", 1.0, 0, step)])
        tracker.end("FINISHED")  # no merging: one operation each
    tracker.close()
    assert not tracker._thread.is_alive() and tracker.dropped == 8
    assert len(said) == 2 and "cannot be written" in said[1]


def test_a_server_that_never_answers_costs_bounded_waits_and_what_is_left_is_spooled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import socket

    from cauce.tracking import JobTracking, _tracker
    from cauce.tracking.api import Target

    monkeypatch.setattr(_tracker, "MAX_QUEUED", 3)
    mute = socket.socket()  # connections are taken by the kernel, never answered
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)
    spool = tmp_path / "spool.jsonl"
    said: list[str] = []
    with mute:
        target = Target(f"http://127.0.0.1:{mute.getsockname()[1]}", "e")
        tracker = _tracker.Tracker(target, spool, name="r", tags={}, warn=said.append)
        for step in range(4):
            tracker.log([("loss", 1.0, 0, step)])
            tracker.text("x", f"f{step}")  # no merging: one operation each
        job = JobTracking(tracker)  # a pruned trial: its run is KILLED, not FAILED
        job.finished("pruned", "", attempts=1, restarts=0, log_dir=tmp_path / "none")
        assert tracker.wait_created(0.2) is None
        tracker.close(0.5)
        lines = [json.loads(line) for line in spool.read_text().splitlines()]
    tracker._thread.join(60)  # the server gone, the run's creation fails: kept once, above
    assert not tracker._thread.is_alive() and tracker.error
    assert spool.read_text().splitlines() == [json.dumps(op, separators=(",", ":")) for op in lines]
    assert lines[0] == {"op": "target", "uri": target.uri, "experiment": "e", "run_id": None}
    kept = [op["op"] for op in lines[1:]]
    # the run's creation (still being sent), what did not fit, then what was queued
    assert kept[0] == "create" and sorted(kept[1:]) == ["batch"] * 5 + ["end"] + ["text"] * 4
    assert [op["status"] for op in lines if op["op"] == "end"] == ["KILLED"]
    assert tracker.failures == len(kept)
    assert any("is slow" in s for s in said) and any("still busy" in s for s in said)


def test_the_mlflow_settings_cauce_sets_for_itself_are_kept_from_the_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from cauce.tracking import _client, without_tracking_env

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "x")  # restored after the test
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # the user's own: kept
    _client.set_defaults()  # as load_mlflow does
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    tasks = without_tracking_env(os.environ)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in tasks
    assert tasks["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7" and tasks["PATH"] == os.environ["PATH"]


def test_a_model_named_dot_dot_is_refused_before_any_server_is_asked(tmp_path: Path) -> None:
    from cauce.errors import TrackingError
    from cauce.tracking import registry_model_dir

    for name in (".", ".."):
        with pytest.raises(TrackingError, match="is not a model name"):
            registry_model_dir(f"models:/{name}/1", tmp_path, "m", {})


@pytest.mark.slow
def test_a_file_that_is_not_a_spool_is_refused_and_never_renamed(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """``cauce mlflow sync`` on what is not a spool: one line, exit 2, the file left as it is."""
    target = '{"op":"target","uri":"http://127.0.0.1:9","experiment":"e"}'
    cases = {
        "garbage.jsonl": ("garbage\n", "garbage.jsonl:1: not a JSON line"),
        "list.jsonl": ("[1]\n", "list.jsonl:1: not a spool record"),
        "bare.jsonl": ('{"op":"target"}\n', "bare.jsonl:1: a target record without uri"),
        "cut.jsonl": (f'{target}\n{{"op":"batc\n{{"op":"end"', "cut.jsonl:2: a line cut short"),
    }
    for name, (text, _) in cases.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "folder.jsonl").mkdir()
    cases["folder.jsonl"] = ("", "folder.jsonl: is a folder")
    for name, (_, said) in cases.items():
        done = cauce(["mlflow", "sync", str(tmp_path / name)], cauce_env, timeout=60)
        assert done.returncode == 2, (name, done.stderr)
        assert done.stderr.startswith("error: ") and said in done.stderr, (name, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert (tmp_path / name).exists() and not (tmp_path / f"{name}.synced").exists()


@pytest.mark.slow
@needs_mlflow
def test_a_tracking_uri_mlflow_cannot_use_is_one_line(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    spool = tmp_path / "spool.jsonl"
    spool.write_text(
        '{"op":"target","uri":"foo://bar","experiment":"e"}\n{"op":"create","name":"r","time":1}\n'
    )
    done = cauce(["mlflow", "sync", str(spool)], cauce_env, timeout=120)
    assert done.returncode == 2 and "the recorded tracking URI foo://bar" in done.stderr
    assert "not a tracking URI MLflow supports; give the server with --uri" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert spool.exists()
