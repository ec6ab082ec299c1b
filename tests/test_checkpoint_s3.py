"""Checkpoints in an object store (moto's S3 server): ``meta.json`` written last commits a
step; a step without it is never loaded; old steps go after the new one is committed; a
checkpoint that cannot be read falls back to the one before; a restarted gang resumes from S3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cauce.runtime import checkpoint
from cauce.runtime.checkpoint import CheckpointError
from helpers import cauce, py, write_job
from s3_fixtures import CREDENTIALS, endpoint_fixture, s3_store_fixture  # noqa: F401 - fixtures

pytest.importorskip("s3fs")

ROOT = "s3://cauce-ckpt/job-1/checkpoints"


@pytest.fixture
def store(s3_store: object) -> object:
    fs: Any = s3_store
    if fs.exists("cauce-ckpt"):
        fs.rm("cauce-ckpt", recursive=True)
    fs.mkdir("cauce-ckpt")
    return fs


def _keys(store: object) -> list[str]:
    store.invalidate_cache()  # type: ignore[attr-defined]
    found = store.find("cauce-ckpt/job-1/checkpoints")  # type: ignore[attr-defined]
    return sorted(k.split("checkpoints/", 1)[1] for k in found)


def _state_file(store: object, step: int) -> str:
    """The name of the state file of ``step``: state.pt or state.pkl."""
    [name] = [k.rsplit("/", 1)[1] for k in _keys(store) if k.startswith(f"step-{step:09d}/state")]
    return name


def test_background_saves_on_s3(store: object) -> None:
    """Written on a thread, committed as a synchronous save is: state, then meta.json."""
    for step in range(3):
        saved = checkpoint.save({"w": step}, step, keep=2, directory=ROOT, background=True)
        assert saved == f"{ROOT}/step-{step:09d}"
    checkpoint.wait()
    state = _state_file(store, 2)
    assert _keys(store) == [
        "step-000000001/meta.json",
        f"step-000000001/{state}",
        "step-000000002/meta.json",
        f"step-000000002/{state}",
    ]
    latest = checkpoint.load(directory=ROOT)
    assert latest is not None and latest.step == 2 and latest.state == {"w": 2}


def test_save_load_keep_on_s3(store: object) -> None:
    assert checkpoint.load(directory=ROOT) is None
    assert checkpoint.latest_step(ROOT) is None
    for step in range(4):
        saved = checkpoint.save({"w": step}, step, keep=2, directory=ROOT)
        assert saved == f"{ROOT}/step-{step:09d}"
    # the state is state.pt when torch is imported in this process (another test did), else .pkl
    state = _state_file(store, 3)
    assert _keys(store) == [
        "step-000000002/meta.json",
        f"step-000000002/{state}",
        "step-000000003/meta.json",
        f"step-000000003/{state}",
    ]
    latest = checkpoint.load(directory=ROOT)
    assert latest is not None and latest.step == 3 and latest.state == {"w": 3}
    assert latest.path == f"{ROOT}/step-000000003"
    assert latest.meta["format"] == {"state.pt": "torch", "state.pkl": "pickle"}[state]
    assert checkpoint.load(step=2, directory=ROOT).state == {"w": 2}  # type: ignore[union-attr]
    with pytest.raises(CheckpointError, match="no checkpoint of step 1"):
        checkpoint.load(step=1, directory=ROOT)


def test_a_step_without_its_marker_is_not_a_checkpoint(store: object) -> None:
    checkpoint.save({"w": 0}, 0, directory=ROOT)
    # a writer killed after the state and before meta.json: its step is not complete
    store.pipe(f"{ROOT[5:]}/step-000000001/state.pkl", b"half")  # type: ignore[attr-defined]
    assert checkpoint.latest_step(ROOT) == 0
    assert checkpoint.load(directory=ROOT).state == {"w": 0}  # type: ignore[union-attr]
    checkpoint.save({"w": 2}, 2, directory=ROOT)  # the next save removes the leftover
    assert "step-000000001/state.pkl" not in _keys(store)
    # saved again (a restarted attempt): the new state, committed again
    checkpoint.save({"w": 22}, 2, directory=ROOT)
    assert checkpoint.load(directory=ROOT).state == {"w": 22}  # type: ignore[union-attr]


def test_an_unreadable_latest_falls_back_to_the_one_before(
    store: object, caplog: pytest.LogCaptureFixture
) -> None:
    for step in range(3):
        checkpoint.save({"w": step}, step, directory=ROOT)
    state = _state_file(store, 2)
    store.pipe(f"{ROOT[5:]}/step-000000002/{state}", b"\x80\x05truncated")  # type: ignore[attr-defined]
    with caplog.at_level("WARNING", logger="cauce.runtime.checkpoint"):
        latest = checkpoint.load(directory=ROOT)
    assert latest is not None and latest.state == {"w": 1}
    assert f"{ROOT}/step-000000002 cannot be read" in caplog.text
    with pytest.raises(CheckpointError, match=f"checkpoint {ROOT}/step-000000002 cannot be read"):
        checkpoint.load(step=2, directory=ROOT)


def test_a_restarted_gang_resumes_from_s3(
    store: object, endpoint: str, tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """A 2-rank job with CAUCE_CHECKPOINT_DIR on S3: rank 0 is killed in epoch 2, the gang
    restarts and resumes from the checkpoint of epoch 1 on S3, ending where an uninterrupted
    run ends; nothing goes to the job's local checkpoint folder."""
    out = tmp_path / "out"
    job = f"""
        name: s3-resume
        framework: none
        command: {py("trainer.py", "--epochs", "4", "--out", str(out), "--crash-epoch", "2")}
        roles:
          worker: {{instances: 2}}
        restart: {{max_restarts: 1, backoff: 0}}
        env:
          CAUCE_CHECKPOINT_DIR: {ROOT}
        """
    env = {**cauce_env, **CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
    done = cauce(["run", str(write_job(tmp_path, job))], env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "worker-0.log.jsonl").read_text().splitlines()]
    assert {"attempt": 1, "resumed_from": 2} in records
    weights = [r["weight"] for r in records if r.get("epoch") == 3]
    assert weights == [pytest.approx(1 - 0.9**20)]  # 4 epochs of 5 steps, as without the crash
    assert checkpoint.latest_step(ROOT) == 3
    assert not list(Path(cauce_env["CAUCE_HOME"]).rglob("step-0*")), "a checkpoint went local"
