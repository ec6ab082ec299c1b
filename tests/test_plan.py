"""The resolve step: commands, environment layering, rank order (pure, no processes)."""

from __future__ import annotations

import os
import sys

import pytest

from cauce.cluster.local import LocalCluster
from cauce.gang._plan import base_env, build_attempt, gang_request, task_argv
from cauce.spec import parse_job


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("python train.py --lr 0.1", ("python", "train.py", "--lr", "0.1")),
        ("python -c 'import os; print(1)'", ("python", "-c", "import os; print(1)")),
        ("python a.py --x=1", ("python", "a.py", "--x=1")),
        ("cd x && python y", ("/bin/sh", "-c", "cd x && python y")),
        ("python x.py > out.log", ("/bin/sh", "-c", "python x.py > out.log")),
        ('python "$X"', ("/bin/sh", "-c", 'python "$X"')),
        ("A=1 python x", ("/bin/sh", "-c", "A=1 python x")),
        ("python *.py", ("/bin/sh", "-c", "python *.py")),
        (("python", "a b.py"), ("python", "a b.py")),
    ],
)
def test_task_argv(command: str | tuple[str, ...], argv: tuple[str, ...]) -> None:
    assert task_argv(command) == argv


def test_base_env_puts_this_python_first() -> None:
    env = base_env({"PATH": "/usr/bin"})
    assert env["PATH"] == f"{os.path.dirname(sys.executable)}{os.pathsep}/usr/bin"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert base_env(env)["PATH"] == env["PATH"]


def test_tensorflow_rank_order_and_env_layers(tmp_path: object) -> None:
    spec = parse_job(
        {
            "name": "tf",
            "framework": "tensorflow",
            "command": "python t.py",
            "env": {"A": "job", "OMP_NUM_THREADS": "4"},
            "roles": {
                "ps": {"instances": 1},
                "worker": {"instances": 2, "env": {"A": "role"}},
                "chief": {"instances": 1},
            },
        }
    )
    request = gang_request(spec, "job-1")
    assert [t.task_id for t in request.tasks] == ["chief-0", "worker-0", "worker-1", "ps-0"]
    cluster = LocalCluster(cpus=8, memory=0, gpus=(), lease_dir=str(tmp_path))
    reservation = cluster.try_reserve(request)
    ports = {t.task_id: 1000 + i for i, t in enumerate(request.tasks)}
    plan = build_attempt(
        spec,
        request,
        reservation,  # type: ignore[arg-type]
        job_id="job-1",
        attempt=0,
        log_dir="/logs",
        environ={"PATH": "/bin", "A": "outer"},
        ports=ports,
    )
    envs = {launch.task_id: launch.env for launch in plan.launches}
    assert envs["worker-1"]["A"] == "role"
    assert envs["chief-0"]["A"] == "job"
    assert envs["chief-0"]["OMP_NUM_THREADS"] == "4"  # the spec's env wins over the contract
    assert plan.launches[0].log_path == "/logs/chief-0.log"
    assert '"chief":["127.0.0.1:1000"]' in envs["worker-0"]["TF_CONFIG"]


def test_inherited_contract_variables_are_dropped(tmp_path: object) -> None:
    """A cauce started under torchrun must not leak its RANK to a task outside the world."""
    spec = parse_job(
        {
            "name": "tf",
            "framework": "tensorflow",
            "command": "python t.py",
            "roles": {"worker": {"instances": 1}, "ps": {"instances": 1}},
        }
    )
    request = gang_request(spec, "job-1")
    cluster = LocalCluster(cpus=8, memory=0, gpus=(), lease_dir=str(tmp_path))
    plan = build_attempt(
        spec,
        request,
        cluster.try_reserve(request),  # type: ignore[arg-type]
        job_id="job-1",
        attempt=0,
        log_dir="/logs",
        environ={"PATH": "/bin", "RANK": "5", "MASTER_ADDR": "10.0.0.1", "HOME": "/root"},
        ports={"worker-0": 1, "ps-0": 2},
    )
    ps = next(launch.env for launch in plan.launches if launch.task_id == "ps-0")
    assert "RANK" not in ps and "MASTER_ADDR" not in ps
    assert ps["HOME"] == "/root" and ps["CAUCE_RANK"] == "-1"
