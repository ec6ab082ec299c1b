"""The job spec: what is accepted, and how bad input is refused (before anything starts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cauce.errors import SpecError
from cauce.spec import JobSpec, RestartPolicy, load_job, parse_job, parse_memory
from helpers import cauce, write_job


def job(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"name": "t", "command": "true"}
    base.update(fields)
    return base


def refused(data: object) -> str:
    with pytest.raises(SpecError) as info:
        parse_job(data, source="job.yaml")
    return str(info.value)


def test_defaults() -> None:
    spec = parse_job({"command": "python train.py"}, source="jobs/x.yaml")
    assert isinstance(spec, JobSpec)
    assert spec.name == "x"
    assert spec.framework == "none"
    assert [(r.name, r.instances, r.resources.cpus, r.resources.gpus) for r in spec.roles] == [
        ("worker", 1, 1.0, 0)
    ]
    assert spec.restart == RestartPolicy(max_restarts=0, backoff=1.0, max_backoff=60.0)
    assert spec.timeout is None


def test_full_spec(tmp_path: Path) -> None:
    path = write_job(
        tmp_path,
        """
        name: mnist-ddp
        framework: pytorch
        command: [python, train.py, --epochs, 3]
        roles:
          worker:
            instances: 4
            resources: {cpus: 0.5, memory: 2GiB, gpus: 1}
            env: {NCCL_DEBUG: INFO}
        env: {SEED: 7, VERBOSE: true}
        workdir: code
        restart: {max_restarts: 3, backoff: 5}
        timeout: 3600
        """,
    )
    spec = load_job(path)
    role = spec.role("worker")
    assert spec.command == ("python", "train.py", "--epochs", "3")
    assert role.instances == 4
    assert role.resources.memory == 2 * 2**30
    assert role.env == (("NCCL_DEBUG", "INFO"),)
    assert dict(spec.env) == {"SEED": "7", "VERBOSE": "1"}
    assert spec.workdir == str(tmp_path / "code")
    assert spec.restart.delay(1) == 5 and spec.restart.delay(3) == 20
    assert spec.timeout == 3600


def test_tensorflow_ps_is_untracked_by_default() -> None:
    spec = parse_job(
        job(framework="tensorflow", roles={"chief": {}, "worker": {"instances": 2}, "ps": {}})
    )
    assert [(r.name, r.tracked) for r in spec.roles] == [
        ("chief", True),
        ("worker", True),
        ("ps", False),
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (job(roles={"worker": {"instances": 0}}), "roles.worker.instances must be >= 1, got 0"),
        (job(rolse={}), "rolse is not a known field; did you mean 'roles'?"),
        (
            job(roles={"worker": {"resources": {"gpu": 1}}}),
            "roles.worker.resources.gpu is not a known field; did you mean 'gpus'?",
        ),
        (job(framework="pytorh"), "framework must be one of pytorch, tensorflow"),
        (job(roles={"worker": {"instances": "2"}}), "roles.worker.instances must be a whole"),
        (
            job(roles={"worker": {"resources": {"cpus": 0}}}),
            "roles.worker.resources.cpus must be > 0 (fractions like 0.5 are allowed), got 0",
        ),
        (job(roles={"worker": {"resources": {"memory": "lots"}}}), "must be a size like 4GiB"),
        (job(roles={"worker": {"resources": {"gpus": -1}}}), "gpus must be >= 0, got -1"),
        (  # 0 would read as not stated
            job(roles={"worker": {"resources": {"memory": 0}}}),
            "roles.worker.resources.memory must be at least 1 byte, got 0; leave it out to state "
            "none",
        ),
        (job(roles={"worker": {"resources": {"memory": 0.5}}}), "at least 1 byte, got 0.5"),
        ({"name": "t"}, "roles.worker.command is missing"),
        # said once, not also "command is missing"
        ({"name": "t", "comand": "true"}, "comand is not a known field; did you mean 'command'?"),
        (job(space={}), "space belongs under tune: (tune.space)"),
        (job(metric="loss"), "metric belongs under tune.objective: (tune.objective.metric)"),
        (job(restart={"max_restarts": -1}), "restart.max_restarts must be >= 0, got -1"),
        (job(timeout=-5), "timeout must be > 0 seconds, got -5"),
        (job(timeout=0), "timeout must be > 0 seconds, got 0"),
        (job(hang_timeout="1 minute"), "hang_timeout must be a duration like 90, 90s, 10m"),
        (job(cluster="sparkk://x"), "cluster must be 'local', 'spark://HOST:PORT'"),
        (job(env={"1BAD": "x"}), "env.1BAD is not a valid environment variable name"),
        (job(roles={"Worker": {}}), "roles.Worker is not a valid role name"),
        (job(framework="tensorflow", roles={"trainer": {}}), "is not a TensorFlow role"),
        (job(framework="tensorflow", roles={"chief": {"instances": 2}}), "must be 1 for"),
        (job(framework="mxnet", roles={"server": {}, "worker": {}}), "no scheduler"),
        (job(roles={"ps": {"tracked": False}}), "has no tracked role"),
        (job(name="has space"), "name must be 1-63 letters"),
        ([1, 2], "must be a mapping of job fields"),
    ],
)
def test_refusals_name_the_field(data: object, expected: str) -> None:
    message = refused(data)
    assert expected in message
    assert message.startswith("job.yaml: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4GiB", 4 * 2**30),
        ("512MiB", 512 * 2**20),
        ("2G", 2 * 10**9),
        (1000, 1000),
        ("1.5Gi", 1610612736),
    ],
)
def test_memory_sizes(text: object, size: int) -> None:
    assert parse_memory(text) == size


def test_name_from_an_unusable_file_name() -> None:
    with pytest.raises(SpecError, match="name is not set and the file name 'my job'"):
        parse_job({"command": "true"}, source="/x/my job.yaml")


def test_command_list_keeps_yaml_booleans_lowercase() -> None:
    spec = parse_job(job(command=["python", "t.py", "--flag", True, 3]))
    assert spec.command == ("python", "t.py", "--flag", "true", "3")


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: x\ncommand: [unclosed\n")
    with pytest.raises(SpecError, match=r"is not valid YAML at line \d+"):
        load_job(path)


def test_missing_file() -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_job("/nonexistent/job.yaml")


def test_cli_refuses_bad_spec_with_one_line_and_exit_2(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    marker = tmp_path / "started"
    path = write_job(
        tmp_path,
        f"""
        name: bad
        command: touch {marker}
        roles:
          worker: {{instances: 0}}
        """,
    )
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("error: ")
    assert "roles.worker.instances must be >= 1, got 0" in done.stderr
    assert not marker.exists()
    # Nothing was recorded either: the job never existed.
    listed = cauce(["jobs"], cauce_env)
    assert "no jobs yet" in listed.stdout


def test_cli_missing_workdir_is_a_spec_error(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    path = write_job(tmp_path, "name: x\ncommand: 'true'\nworkdir: nowhere\n")
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 2
    assert "workdir folder" in done.stderr and "does not exist" in done.stderr
    assert "no jobs yet" in cauce(["jobs"], cauce_env).stdout


def test_cli_unknown_key(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    path = write_job(tmp_path, "name: x\ncommand: 'true'\nretsart: {max_restarts: 1}\n")
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 2
    assert "retsart is not a known field; did you mean 'restart'?" in done.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        ("90", 90.0),
        ("90s", 90.0),
        ("10m", 600.0),
        ("2min", 120.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
    ],
)
def test_durations_have_one_format(text: object, seconds: float) -> None:
    from cauce.spec import parse_duration

    assert parse_duration(text, "x") == seconds
    spec = parse_job({"name": "t", "command": "true", "timeout": text, "grace_period": text})
    assert spec.timeout == spec.grace_period == seconds
    restart = parse_job({"name": "t", "command": "true", "restart": {"backoff": text}}).restart
    assert restart.backoff == seconds


@pytest.mark.parametrize("text", ["10m1h", "5s5s", "1 minute", "m", "", "-1s"])
def test_durations_refused(text: str) -> None:
    assert "must be a duration like 90, 90s, 10m, 1h or 1h30m" in refused(
        {"name": "t", "command": "true", "timeout": text}
    )
