"""The env contract, unit by unit: layouts built by hand, exact values, no processes."""

from __future__ import annotations

import http.client
import json
import threading
import types
from collections.abc import Iterator, Sequence

import pytest

import cauce.frameworks
from cauce.frameworks import (
    FRAMEWORKS,
    GangLayout,
    TaskSlot,
    _horovod_kv,
    rank_order,
    start_horovod_kv,
    task_env,
)
from cauce.frameworks import jax as cauce_jax
from cauce.spec import RoleSpec

ALWAYS = (
    "CAUCE_JOB_ID",
    "CAUCE_JOB_NAME",
    "CAUCE_TASK_ID",
    "CAUCE_ROLE",
    "CAUCE_ROLE_INDEX",
    "CAUCE_RANK",
    "CAUCE_WORLD_SIZE",
    "CAUCE_ATTEMPT",
    "CAUCE_FRAMEWORK",
    "JOB_NAME",
    "TASK_INDEX",
    "TASK_NUM",
    "IS_CHIEF",
    "CLUSTER_SPEC",
    "INIT_METHOD",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)
TORCH = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "ROLE_NAME",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_USE_AGENT_STORE",
)


def layout(
    framework: str,
    roles: Sequence[tuple[str, int]],
    *,
    hosts: Sequence[str] | None = None,
    untracked: Sequence[str] = (),
    gpus: dict[str, tuple[str, ...]] | None = None,
    cpus: float = 1.0,
    attempt: int = 0,
    rendezvous: str | None = None,
) -> GangLayout:
    """Slots in the given role order; task i on ``hosts[i]`` (default 127.0.0.1), port 7000+i."""
    slots: list[TaskSlot] = []
    for role, count in roles:
        for index in range(count):
            number = len(slots)
            task_id = f"{role}-{index}"
            slots.append(
                TaskSlot(
                    task_id=task_id,
                    role=role,
                    index=index,
                    host=hosts[number] if hosts else "127.0.0.1",
                    port=7000 + number,
                    gpus=(gpus or {}).get(task_id, ()),
                    cpus=cpus,
                    tracked=role not in untracked,
                )
            )
    return GangLayout(
        job_id="j-42",
        job_name="demo",
        framework=framework,
        attempt=attempt,
        max_restarts=3,
        slots=tuple(slots),
        rendezvous=rendezvous,
    )


def envs(gang: GangLayout) -> dict[str, dict[str, str]]:
    return {slot.task_id: task_env(gang, slot.task_id) for slot in gang.slots}


# --- public surface ---------------------------------------------------------------------------


def test_all_is_complete() -> None:
    module = cauce.frameworks
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert public == set(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name)


# --- rank_order -------------------------------------------------------------------------------


def names(roles: Sequence[RoleSpec]) -> list[str]:
    return [role.name for role in roles]


def specs(*role_names: str) -> list[RoleSpec]:
    return [RoleSpec(name) for name in role_names]


def test_rank_order_tensorflow() -> None:
    roles = specs("evaluator", "ps", "worker", "chief")
    assert names(rank_order("tensorflow", roles)) == ["chief", "worker", "ps", "evaluator"]


def test_rank_order_mxnet() -> None:
    roles = specs("worker", "server", "scheduler")
    assert names(rank_order("mxnet", roles)) == ["scheduler", "server", "worker"]


@pytest.mark.parametrize("framework", ["pytorch", "jax", "horovod", "none"])
def test_rank_order_others_keep_declaration_but_leader_first(framework: str) -> None:
    assert names(rank_order(framework, specs("worker", "helper"))) == ["worker", "helper"]
    roles = specs("worker", "helper", "master")
    assert names(rank_order(framework, roles)) == ["master", "worker", "helper"]
    roles = specs("worker", "chief", "helper")
    assert names(rank_order(framework, roles)) == ["chief", "worker", "helper"]


def test_unknown_framework_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown framework 'caffe'"):
        rank_order("caffe", specs("worker"))
    with pytest.raises(ValueError, match="unknown framework 'caffe'"):
        task_env(layout("caffe", [("worker", 1)]), "worker-0")


def test_unknown_task_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        task_env(layout("pytorch", [("worker", 1)]), "worker-9")


# --- variables every framework gets ------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_always_present(framework: str) -> None:
    roles = {
        "tensorflow": [("chief", 1), ("worker", 1)],
        "mxnet": [("scheduler", 1), ("server", 1), ("worker", 2)],
    }.get(framework, [("worker", 2)])
    gang = layout(framework, roles)
    for task_id, env in envs(gang).items():
        missing = [name for name in ALWAYS if name not in env]
        assert not missing, (task_id, missing)
        assert env["CAUCE_FRAMEWORK"] == framework
        assert env["CAUCE_TASK_ID"] == task_id
        assert all(isinstance(value, str) for value in env.values())
    assert sum(env["IS_CHIEF"] == "true" for env in envs(gang).values()) == 1


def test_pytorch_exact() -> None:
    gang = layout("pytorch", [("worker", 2)], attempt=1)
    assert task_env(gang, "worker-1") == {
        "CAUCE_JOB_ID": "j-42",
        "CAUCE_JOB_NAME": "demo",
        "CAUCE_TASK_ID": "worker-1",
        "CAUCE_ROLE": "worker",
        "CAUCE_ROLE_INDEX": "1",
        "CAUCE_RANK": "1",
        "CAUCE_WORLD_SIZE": "2",
        "CAUCE_ATTEMPT": "1",
        "CAUCE_FRAMEWORK": "pytorch",
        "JOB_NAME": "worker",
        "TASK_INDEX": "1",
        "TASK_NUM": "2",
        "IS_CHIEF": "false",
        "CLUSTER_SPEC": '{"worker":["127.0.0.1:7000","127.0.0.1:7001"]}',
        "INIT_METHOD": "tcp://127.0.0.1:7000",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "7000",
        "RANK": "1",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "0",
        "GROUP_WORLD_SIZE": "1",
        "ROLE_RANK": "1",
        "ROLE_WORLD_SIZE": "2",
        "ROLE_NAME": "worker",
        "TORCHELASTIC_RESTART_COUNT": "1",
        "TORCHELASTIC_MAX_RESTARTS": "3",
        "TORCHELASTIC_RUN_ID": "j-42",
        "TORCHELASTIC_USE_AGENT_STORE": "False",
        # Kubeflow's PyTorchJob: each task a pod of one process.
        "PET_MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_PORT": "7000",
        "PET_NNODES": "2",
        "PET_NODE_RANK": "1",
        "PET_NPROC_PER_NODE": "1",
    }
    assert task_env(gang, "worker-0")["IS_CHIEF"] == "true"


@pytest.mark.parametrize("framework", ["none", "horovod"])
def test_kubeflow_pet_names_are_pytorch_only(framework: str) -> None:
    env = task_env(layout(framework, [("worker", 2)]), "worker-0")
    assert not [name for name in env if name.startswith("PET_")]


def test_kubeflow_pet_names_outside_the_world() -> None:
    gang = layout("pytorch", [("worker", 1), ("monitor", 1)], untracked=("monitor",))
    assert not [k for k in task_env(gang, "monitor-0") if k.startswith("PET_")]


@pytest.mark.parametrize("framework", ["pytorch", "none", "horovod"])
def test_torch_variables_for_pytorch_none_and_horovod(framework: str) -> None:
    env = task_env(layout(framework, [("worker", 2)]), "worker-0")
    assert all(name in env for name in TORCH)


@pytest.mark.parametrize("framework", ["tensorflow", "jax", "mxnet"])
def test_no_torch_variables_elsewhere(framework: str) -> None:
    env = task_env(layout(framework, [("worker", 2)]), "worker-0")
    assert not [name for name in TORCH if name in env]


def test_master_role_leads_and_is_chief() -> None:
    gang = layout("pytorch", [("master", 1), ("worker", 2)])
    env = envs(gang)
    assert [env[t]["RANK"] for t in ("master-0", "worker-0", "worker-1")] == ["0", "1", "2"]
    assert [env[t]["IS_CHIEF"] for t in env] == ["true", "false", "false"]
    assert env["worker-1"]["ROLE_RANK"] == "1"
    assert env["worker-1"]["ROLE_WORLD_SIZE"] == "2"
    assert env["master-0"]["ROLE_WORLD_SIZE"] == "1"
    assert env["worker-0"]["TASK_NUM"] == "2"
    assert json.loads(env["worker-0"]["CLUSTER_SPEC"]) == {
        "master": ["127.0.0.1:7000"],
        "worker": ["127.0.0.1:7001", "127.0.0.1:7002"],
    }


def test_untracked_role_is_outside_the_world() -> None:
    gang = layout("pytorch", [("worker", 2), ("monitor", 1)], untracked=("monitor",))
    env = task_env(gang, "monitor-0")
    assert env["CAUCE_RANK"] == "-1"
    assert env["CAUCE_WORLD_SIZE"] == "2"
    assert env["IS_CHIEF"] == "false"
    assert not [name for name in TORCH if name in env]
    assert task_env(gang, "worker-1")["WORLD_SIZE"] == "2"


def test_cuda_visible_devices_and_threads() -> None:
    gang = layout("pytorch", [("worker", 2)], gpus={"worker-0": ("0", "2")}, cpus=2.7)
    assert task_env(gang, "worker-0")["CUDA_VISIBLE_DEVICES"] == "0,2"
    assert task_env(gang, "worker-1")["CUDA_VISIBLE_DEVICES"] == ""
    assert task_env(gang, "worker-0")["OMP_NUM_THREADS"] == "2"
    assert task_env(gang, "worker-0")["MKL_NUM_THREADS"] == "2"
    small = layout("pytorch", [("worker", 1)], cpus=0.5)
    assert task_env(small, "worker-0")["OMP_NUM_THREADS"] == "1"


def test_pure_whatever_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    gang = layout("horovod", [("worker", 2)])
    before = envs(gang)
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    assert envs(gang) == before


def test_ipv6_addresses_are_bracketed() -> None:
    gang = layout("jax", [("worker", 2)], hosts=["::1", "::1"])
    env = task_env(gang, "worker-1")
    assert env["INIT_METHOD"] == "tcp://[::1]:7000"
    assert env["JAX_COORDINATOR_ADDRESS"] == "[::1]:7000"
    assert f"{env['COORDINATOR_ADDRESS']}:{env['COORDINATOR_PORT']}" == "[::1]:7000"
    assert json.loads(env["CLUSTER_SPEC"]) == {"worker": ["[::1]:7000", "[::1]:7001"]}


# --- two hosts ----------------------------------------------------------------------------------


def test_two_hosts_grouped() -> None:
    gang = layout(
        "pytorch", [("worker", 4)], hosts=["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2"]
    )
    env = envs(gang)
    assert [env[f"worker-{i}"]["LOCAL_RANK"] for i in range(4)] == ["0", "1", "0", "1"]
    assert [env[f"worker-{i}"]["GROUP_RANK"] for i in range(4)] == ["0", "0", "1", "1"]
    assert {env[f"worker-{i}"]["LOCAL_WORLD_SIZE"] for i in range(4)} == {"2"}
    assert {env[f"worker-{i}"]["GROUP_WORLD_SIZE"] for i in range(4)} == {"2"}
    assert {env[f"worker-{i}"]["MASTER_ADDR"] for i in range(4)} == {"10.0.0.1"}


def test_two_hosts_interleaved_and_uneven() -> None:
    hosts = ["10.0.0.2", "10.0.0.1", "10.0.0.2", "10.0.0.2"]
    gang = layout("horovod", [("worker", 4)], hosts=hosts, rendezvous="10.0.0.9:5000")
    env = envs(gang)

    def col(name: str) -> list[str]:
        return [env[f"worker-{i}"][name] for i in range(4)]

    assert col("RANK") == ["0", "1", "2", "3"]
    assert col("LOCAL_RANK") == ["0", "0", "1", "2"]
    assert col("LOCAL_WORLD_SIZE") == ["3", "1", "3", "3"]
    assert col("GROUP_RANK") == ["0", "1", "0", "0"]  # hosts in order of first appearance
    assert col("HOROVOD_LOCAL_RANK") == col("LOCAL_RANK")
    assert col("HOROVOD_LOCAL_SIZE") == col("LOCAL_WORLD_SIZE")
    # cross communicators: local rank 0 lives on both hosts, 1 and 2 only on 10.0.0.2
    assert col("HOROVOD_CROSS_RANK") == ["0", "1", "0", "0"]
    assert col("HOROVOD_CROSS_SIZE") == ["2", "2", "1", "1"]
    assert col("HOROVOD_HOSTNAME") == hosts
    assert col("MASTER_ADDR") == ["10.0.0.2"] * 4


# --- consistency across names ----------------------------------------------------------------


@pytest.mark.parametrize("framework", ["pytorch", "none", "horovod", "jax"])
def test_rank_names_agree(framework: str) -> None:
    gang = layout(framework, [("worker", 3)], hosts=["a", "b", "a"])
    for slot in gang.slots:
        env = task_env(gang, slot.task_id)
        rank = env["CAUCE_RANK"]
        size = env["CAUCE_WORLD_SIZE"]
        assert size == "3"
        pairs = {
            "pytorch": [("RANK", "WORLD_SIZE"), ("PET_NODE_RANK", "PET_NNODES")],
            "none": [("RANK", "WORLD_SIZE")],
            "horovod": [("RANK", "WORLD_SIZE"), ("HOROVOD_RANK", "HOROVOD_SIZE")],
            "jax": [("JAX_PROCESS_ID", "JAX_NUM_PROCESSES"), ("PROCESS_ID", "NUM_PROCESSES")],
        }[framework]
        for rank_name, size_name in pairs:
            assert (env[rank_name], env[size_name]) == (rank, size)


# --- TensorFlow -------------------------------------------------------------------------------


def tf_gang() -> GangLayout:
    return layout(
        "tensorflow",
        [("chief", 1), ("worker", 2), ("ps", 1), ("evaluator", 1)],
        untracked=("ps",),
    )


def test_tf_config_exact() -> None:
    env = envs(tf_gang())
    cluster = {
        "chief": ["127.0.0.1:7000"],
        "worker": ["127.0.0.1:7001", "127.0.0.1:7002"],
        "ps": ["127.0.0.1:7003"],
    }
    assert json.loads(env["worker-1"]["TF_CONFIG"]) == {
        "cluster": cluster,
        "task": {"type": "worker", "index": 1},
    }
    assert json.loads(env["ps-0"]["TF_CONFIG"]) == {
        "cluster": cluster,
        "task": {"type": "ps", "index": 0},
    }
    assert json.loads(env["chief-0"]["TF_CONFIG"])["task"] == {"type": "chief", "index": 0}


def test_tf_evaluator_sees_only_itself_and_nobody_sees_it() -> None:
    env = envs(tf_gang())
    assert json.loads(env["evaluator-0"]["TF_CONFIG"]) == {
        "cluster": {"evaluator": ["127.0.0.1:7004"]},
        "task": {"type": "evaluator", "index": 0},
    }
    for task_id, task in env.items():
        if task_id != "evaluator-0":
            assert "evaluator" not in json.loads(task["TF_CONFIG"])["cluster"]
    assert env["evaluator-0"]["CAUCE_RANK"] == "-1"
    # TonY's CLUSTER_SPEC lists every task, the evaluator included
    assert json.loads(env["chief-0"]["CLUSTER_SPEC"])["evaluator"] == ["127.0.0.1:7004"]


def test_tf_rank_is_position_among_chief_and_workers() -> None:
    env = envs(tf_gang())
    for task_id, task in env.items():
        config = json.loads(task["TF_CONFIG"])
        kind, index = config["task"]["type"], config["task"]["index"]
        if kind in ("chief", "worker"):
            order = [(r, i) for r in ("chief", "worker") for i in range(len(config["cluster"][r]))]
            assert task["CAUCE_RANK"] == str(order.index((kind, index))), task_id
        else:
            assert task["CAUCE_RANK"] == "-1", task_id
        assert task["CAUCE_WORLD_SIZE"] == "3"
    assert [env[t]["IS_CHIEF"] for t in env] == ["true", "false", "false", "false", "false"]
    assert {env[t]["INIT_METHOD"] for t in env} == {"tcp://127.0.0.1:7000"}


def test_tf_workers_only_worker_0_is_chief() -> None:
    env = envs(layout("tensorflow", [("worker", 2)]))
    assert [env[t]["IS_CHIEF"] for t in env] == ["true", "false"]
    assert json.loads(env["worker-0"]["TF_CONFIG"]) == {
        "cluster": {"worker": ["127.0.0.1:7000", "127.0.0.1:7001"]},
        "task": {"type": "worker", "index": 0},
    }


KUBEFLOW_JAX = ("COORDINATOR_ADDRESS", "COORDINATOR_PORT", "NUM_PROCESSES", "PROCESS_ID")


# --- JAX --------------------------------------------------------------------------------------


def test_jax_exact() -> None:
    env = task_env(layout("jax", [("worker", 2)]), "worker-1")
    assert {k: v for k, v in env.items() if k.startswith("JAX_")} == {
        "JAX_COORDINATOR_ADDRESS": "127.0.0.1:7000",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": "1",
    }


def test_jax_kubeflow_names_exact() -> None:
    env = task_env(layout("jax", [("worker", 2)], hosts=["10.0.0.5", "10.0.0.6"]), "worker-1")
    assert {k: env[k] for k in KUBEFLOW_JAX} == {
        "COORDINATOR_ADDRESS": "10.0.0.5",
        "COORDINATOR_PORT": "7000",
        "NUM_PROCESSES": "2",
        "PROCESS_ID": "1",
    }


def test_jax_nothing_outside_the_world() -> None:
    gang = layout("jax", [("worker", 1), ("monitor", 1)], untracked=("monitor",))
    env = task_env(gang, "monitor-0")
    assert not [k for k in env if k.startswith("JAX_") or k in KUBEFLOW_JAX]


def test_jax_initialize_needs_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES"):
        cauce_jax.initialize()


# --- Horovod ----------------------------------------------------------------------------------


def test_horovod_exact() -> None:
    gang = layout("horovod", [("worker", 2)], rendezvous="127.0.0.1:5555")
    env = task_env(gang, "worker-1")
    assert {k: v for k, v in env.items() if k.startswith("HOROVOD_")} == {
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": "127.0.0.1",
        "HOROVOD_GLOO_RENDEZVOUS_PORT": "5555",
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_TIMEOUT_SECONDS": "120",
        "HOROVOD_HOSTNAME": "127.0.0.1",
        "HOROVOD_RANK": "1",
        "HOROVOD_SIZE": "2",
        "HOROVOD_LOCAL_RANK": "1",
        "HOROVOD_LOCAL_SIZE": "2",
        "HOROVOD_CROSS_RANK": "0",
        "HOROVOD_CROSS_SIZE": "1",
    }


def test_horovod_rendezvous_fallback_and_ipv6() -> None:
    env = task_env(layout("horovod", [("worker", 2)]), "worker-1")
    assert (env["HOROVOD_GLOO_RENDEZVOUS_ADDR"], env["HOROVOD_GLOO_RENDEZVOUS_PORT"]) == (
        "127.0.0.1",
        "7000",
    )
    env = task_env(layout("horovod", [("worker", 1)], rendezvous="[::1]:99"), "worker-0")
    assert (env["HOROVOD_GLOO_RENDEZVOUS_ADDR"], env["HOROVOD_GLOO_RENDEZVOUS_PORT"]) == (
        "::1",
        "99",
    )
    with pytest.raises(ValueError, match="host:port"):
        task_env(layout("horovod", [("worker", 1)], rendezvous="nowhere"), "worker-0")


# --- MXNet ------------------------------------------------------------------------------------


def test_mxnet_exact() -> None:
    gang = layout("mxnet", [("scheduler", 1), ("server", 2), ("worker", 2)])
    env = envs(gang)

    def dmlc(task_id: str) -> dict[str, str]:
        return {k: v for k, v in env[task_id].items() if k.startswith("DMLC_")}

    common = {
        "DMLC_PS_ROOT_URI": "127.0.0.1",
        "DMLC_PS_ROOT_PORT": "7000",
        "DMLC_NUM_SERVER": "2",
        "DMLC_NUM_WORKER": "2",
        "DMLC_NODE_HOST": "127.0.0.1",
    }
    assert dmlc("scheduler-0") == {**common, "DMLC_ROLE": "scheduler"}
    assert dmlc("server-1") == {**common, "DMLC_ROLE": "server"}
    assert dmlc("worker-1") == {**common, "DMLC_ROLE": "worker"}
    assert [env[t]["CAUCE_RANK"] for t in env] == ["-1", "-1", "-1", "0", "1"]
    assert [env[t]["IS_CHIEF"] for t in env] == ["false", "false", "false", "true", "false"]
    assert {env[t]["CAUCE_WORLD_SIZE"] for t in env} == {"2"}
    assert all("DMLC_RANK" not in task for task in env.values())  # ps-lite sets it itself


def test_mxnet_without_scheduler_has_no_root() -> None:
    env = task_env(layout("mxnet", [("worker", 1)]), "worker-0")
    assert "DMLC_PS_ROOT_URI" not in env
    assert env["DMLC_NUM_SERVER"] == "0"


# --- the Horovod key-value store --------------------------------------------------------------


@pytest.fixture
def kv() -> Iterator[tuple[_horovod_kv.HorovodKVServer, int]]:
    server, port = start_horovod_kv("127.0.0.1")
    try:
        yield server, port
    finally:
        server.stop()


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # 8 clients on a busy host
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_kv_put_get_delete(kv: tuple[_horovod_kv.HorovodKVServer, int]) -> None:
    server, port = kv
    assert request(port, "GET", "/global_/rank_0") == (404, b"")
    value = bytes(range(256))  # Gloo addresses are binary
    assert request(port, "PUT", "/global_/rank_0", value) == (200, b"")
    assert request(port, "GET", "/global_/rank_0") == (200, value)
    assert request(port, "PUT", "/local_0/1/0", b"x") == (200, b"")  # keys may contain '/'
    assert request(port, "GET", "/local_0/1/0") == (200, b"x")
    assert server.keys() == {"global_": ["rank_0"], "local_0": ["1/0"]}
    assert request(port, "DELETE", "/global_/rank_0") == (200, b"")
    assert request(port, "DELETE", "/global_/never-set") == (200, b"")
    assert request(port, "GET", "/global_/rank_0") == (404, b"")
    assert server.keys() == {"local_0": ["1/0"]}
    server.clear()
    assert request(port, "GET", "/local_0/1/0") == (404, b"")


def test_kv_bad_paths(kv: tuple[_horovod_kv.HorovodKVServer, int]) -> None:
    _, port = kv
    assert request(port, "GET", "/only-scope")[0] == 400
    assert request(port, "PUT", "/", b"v")[0] == 400


def test_kv_concurrent_clients(kv: tuple[_horovod_kv.HorovodKVServer, int]) -> None:
    server, port = kv
    errors: list[BaseException] = []

    def client(rank: int) -> None:
        try:
            for step in range(20):
                key = f"/cross_{rank}/{step}"
                assert request(port, "PUT", key, f"{rank}:{step}".encode()) == (200, b"")
                assert request(port, "GET", key) == (200, f"{rank}:{step}".encode())
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(rank,)) for rank in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert {scope: len(keys) for scope, keys in server.keys().items()} == {
        f"cross_{rank}": 20 for rank in range(8)
    }


def test_kv_stop_twice_and_port_is_freed() -> None:
    server, port = _horovod_kv.start()
    _horovod_kv.stop(server)
    server.stop()
    with pytest.raises(OSError):
        request(port, "GET", "/a/b")
