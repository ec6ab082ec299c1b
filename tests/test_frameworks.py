"""The env contract with the real frameworks: gangs run by the real CLI, ``cauce run job.yaml``.

Each test writes a job file in a temporary folder and runs ``python -m cauce run`` there with an
isolated ``CAUCE_HOME``; the tasks are the scripts of ``tests/bin``. A test whose framework is not
importable here is skipped and says which.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
from pathlib import Path

import pytest

from cauce.frameworks import GangLayout, TaskSlot, task_env
from helpers import ROOT, cauce, py, write_job

pytestmark = [pytest.mark.slow, pytest.mark.framework]


def need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not importable in this environment")


def importable(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the source tree on PYTHONPATH, for when cauce is not installed: the CLI and
    some tasks (jax_psum.py) import it."""
    env = dict(env)
    paths = [str(ROOT / "src"), *filter(None, env.get("PYTHONPATH", "").split(":"))]
    env["PYTHONPATH"] = ":".join(paths)
    return env


def run_job(tmp_path: Path, env: dict[str, str], text: str, timeout: float = 240) -> str:
    """Run the job in ``text`` to the end; fail with its output unless it exits 0."""
    path = write_job(tmp_path, text)
    result = cauce(["run", str(path)], importable(env), cwd=tmp_path, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def contracts(folder: Path) -> dict[str, dict[str, str]]:
    """The variables check_env.py wrote, by task id."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


# --- names and meanings, read from the frameworks' own code ------------------------------------


def test_torchrun_names_are_all_given() -> None:
    """Every variable torch's elastic agent gives its workers is in the contract."""
    need("torch")
    from torch.distributed.elastic.agent.server import local_elastic_agent

    source = inspect.getsource(local_elastic_agent.LocalElasticAgent)
    names = set(re.findall(r'"([A-Z][A-Z0-9_]+)": ', source))
    names |= set(re.findall(r'worker_env\["([A-Z][A-Z0-9_]+)"\]', source))
    assert {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "GROUP_RANK"} <= names
    names -= {"TORCH_NCCL_ASYNC_ERROR_HANDLING"}  # an NCCL knob, left to the user's env
    names -= {"CUDA_VISIBLE_DEVICES"}  # in the contract, from the slot's GPUs
    layout = GangLayout(
        "j", "n", "pytorch", 0, 0, (TaskSlot("worker-0", "worker", 0, "127.0.0.1", 29500),)
    )
    given = task_env(layout, "worker-0")
    assert sorted(names - set(given)) == []


# --- PyTorch and the "none" framework ----------------------------------------------------------


@pytest.mark.parametrize("framework", ["pytorch", "none"])
def test_pytorch_gloo_all_reduce(tmp_path: Path, cauce_env: dict[str, str], framework: str) -> None:
    need("torch")
    out = tmp_path / "out"
    output = run_job(
        tmp_path,
        cauce_env,
        f"""
        name: torch-env
        framework: {framework}
        command: {py("check_env.py", "--use-framework", "--out", out)}
        roles:
          master: {{instances: 1, resources: {{cpus: 0.25}}}}
          worker: {{instances: 2, resources: {{cpus: 0.25}}}}
        """,
    )
    assert output.count("torch all_reduce 6.0") == 3, output
    found = contracts(out)
    assert sorted(task["RANK"] for task in found.values()) == ["0", "1", "2"]
    assert found["master-0"]["RANK"] == "0"
    assert found["master-0"]["IS_CHIEF"] == "true"
    assert {task["MASTER_PORT"] for task in found.values()} == {found["master-0"]["MASTER_PORT"]}


# --- TensorFlow --------------------------------------------------------------------------------


def check_weights(out: Path, tasks: list[str]) -> None:
    import numpy as np  # here: the module must collect where numpy is not installed

    weights = {task: np.load(out / f"{task}.npy") for task in tasks}
    first = weights[tasks[0]]
    for task, value in weights.items():
        np.testing.assert_array_equal(value, first, err_msg=task)
    summary = json.loads((out / f"{tasks[0]}.json").read_text())
    assert summary["replicas"] == len(tasks)
    assert summary["last_loss"] < summary["first_loss"] / 100
    np.testing.assert_allclose(first, [1.5, -2.0, 0.5, 3.0, 0.25], atol=0.05)


@pytest.mark.parametrize(
    ("roles", "tasks"),
    [
        ("worker: {instances: 2}", ["worker-0", "worker-1"]),
        ("chief: {instances: 1}\n          worker: {instances: 1}", ["chief-0", "worker-0"]),
    ],
    ids=["workers", "chief+worker"],
)
def test_tensorflow_multi_worker_mirrored(
    tmp_path: Path, cauce_env: dict[str, str], roles: str, tasks: list[str]
) -> None:
    need("tensorflow")
    out = tmp_path / "out"
    run_job(
        tmp_path,
        cauce_env,
        f"""
        name: tf-mwms
        framework: tensorflow
        command: {py("tf_mwms.py", "--out", out)}
        roles:
          {roles}
        """,
    )
    check_weights(out, tasks)


def test_tensorflow_reads_every_tf_config(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    """Chief, workers, a parameter server and an evaluator: TensorFlow's own resolver agrees."""
    need("tensorflow")
    out = tmp_path / "out"
    output = run_job(
        tmp_path,
        cauce_env,
        f"""
        name: tf-roles
        framework: tensorflow
        command: {py("check_env.py", "--use-framework", "--out", out)}
        roles:
          evaluator: {{instances: 1, resources: {{cpus: 0.25}}}}
          ps: {{instances: 1, resources: {{cpus: 0.25}}}}
          worker: {{instances: 2, resources: {{cpus: 0.25}}}}
          chief: {{instances: 1, resources: {{cpus: 0.25}}}}
        """,
    )
    assert "TensorFlow reads evaluator:0 in ['evaluator']" in output
    found = contracts(out)
    ranks = {task: found[task]["CAUCE_RANK"] for task in found}
    assert ranks == {
        "chief-0": "0",
        "worker-0": "1",
        "worker-1": "2",
        "ps-0": "-1",
        "evaluator-0": "-1",
    }


# --- JAX ---------------------------------------------------------------------------------------


def test_jax_cross_process_sum(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    need("jax")
    out = tmp_path / "out"
    run_job(
        tmp_path,
        cauce_env,
        f"""
        name: jax-psum
        framework: jax
        command: {py("jax_psum.py", "--out", out)}
        roles:
          worker: {{instances: 2, resources: {{cpus: 0.25}}}}
        """,
    )
    results = [json.loads((out / f"jax-{p}.json").read_text()) for p in range(2)]
    assert [r["sum"] for r in results] == [3.0, 3.0]
    assert [(r["process"], r["processes"], r["rank"]) for r in results] == [
        (0, 2, "0"),
        (1, 2, "1"),
    ]


# --- Horovod -----------------------------------------------------------------------------------


def test_horovod_env_and_rendezvous_store(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    """Needs no Horovod: the variables, and the driver's key-value store answering as Gloo's
    HTTPStore expects."""
    out = tmp_path / "out"
    run_job(
        tmp_path,
        cauce_env,
        f"""
        name: hvd-env
        framework: horovod
        command: {py("check_env.py", "--probe-rendezvous", "--out", out)}
        roles:
          worker: {{instances: 3, resources: {{cpus: 0.25}}}}
        """,
    )
    found = contracts(out)
    assert sorted(task["HOROVOD_RANK"] for task in found.values()) == ["0", "1", "2"]
    stores = {
        (task["HOROVOD_GLOO_RENDEZVOUS_ADDR"], task["HOROVOD_GLOO_RENDEZVOUS_PORT"])
        for task in found.values()
    }
    assert len(stores) == 1


def test_horovod_allreduce(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    need("horovod")
    output = run_job(
        tmp_path,
        cauce_env,
        f"""
        name: hvd
        framework: horovod
        command: {py("check_env.py", "--use-framework")}
        roles:
          worker: {{instances: 2, resources: {{cpus: 0.25}}}}
        """,
    )
    assert output.count("horovod allreduce 3.0") == 2, output


# --- MXNet -------------------------------------------------------------------------------------


def mxnet_job(tmp_path: Path, cauce_env: dict[str, str], *flags: str) -> dict[str, dict[str, str]]:
    out = tmp_path / "out"
    run_job(
        tmp_path,
        cauce_env,
        f"""
        name: mx
        framework: mxnet
        command: {py("check_env.py", *flags, "--out", out)}
        roles:
          worker: {{instances: 2, resources: {{cpus: 0.25}}}}
          server: {{instances: 1, resources: {{cpus: 0.25}}}}
          scheduler: {{instances: 1, resources: {{cpus: 0.25}}}}
        """,
    )
    return contracts(out)


def test_mxnet_env(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    """Needs no MXNet: every task of a scheduler + server + workers gang checks its DMLC_*."""
    found = mxnet_job(tmp_path, cauce_env)
    assert sorted(found) == ["scheduler-0", "server-0", "worker-0", "worker-1"]
    assert {task["DMLC_ROLE"] for task in found.values()} == {"scheduler", "server", "worker"}


def test_mxnet_dist_sync_kvstore(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    need("mxnet")
    mxnet_job(tmp_path, cauce_env, "--use-framework")


def test_failing_check_fails_the_job(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    """check_env.py itself: a broken contract makes the task, and so the job, fail."""
    path = write_job(
        tmp_path,
        f"""
        name: broken
        framework: pytorch
        command: {py("check_env.py")}
        env:
          RANK: "7"
        """,
    )
    result = cauce(["run", str(path)], importable(cauce_env), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "RANK='7' but CAUCE_RANK='0'" in output
