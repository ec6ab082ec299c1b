"""Check, inside a task, that cauce's variables for its framework are present and consistent.

Exits 1 with one line per problem, 0 when all is well. Options:

    --out DIR            write every variable of the contract to DIR/<task_id>.json
    --probe-rendezvous   (horovod) PUT, GET and DELETE a key on the Gloo key-value store
    --use-framework      also exercise the framework when it is importable:
                         pytorch/none: a Gloo all_reduce; horovod: hvd.allreduce;
                         mxnet: a dist_sync kvstore push/pull (server and scheduler serve);
                         tensorflow: TF_CONFIG read back by TensorFlow's own resolver
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import sys

ALWAYS = [
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
]
TORCH = [
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
]
HOROVOD = [
    "HOROVOD_GLOO_RENDEZVOUS_ADDR",
    "HOROVOD_GLOO_RENDEZVOUS_PORT",
    "HOROVOD_CONTROLLER",
    "HOROVOD_CPU_OPERATIONS",
    "HOROVOD_RANK",
    "HOROVOD_SIZE",
    "HOROVOD_LOCAL_RANK",
    "HOROVOD_LOCAL_SIZE",
    "HOROVOD_CROSS_RANK",
    "HOROVOD_CROSS_SIZE",
    "HOROVOD_HOSTNAME",
    "HOROVOD_GLOO_TIMEOUT_SECONDS",
]
CONTRACT_PREFIXES = ("CAUCE_", "HOROVOD_", "DMLC_", "JAX_", "TORCHELASTIC_")
CONTRACT_NAMES = {*ALWAYS, *TORCH, "TF_CONFIG"}


class Checker:
    def __init__(self) -> None:
        self.env = os.environ
        self.problems: list[str] = []

    def need(self, *names: str) -> bool:
        missing = [name for name in names if name not in self.env]
        if missing:
            self.problems.append(f"missing: {' '.join(missing)}")
        return not missing

    def same(self, left: str, right: str) -> None:
        if self.env.get(left) != self.env.get(right):
            left_value, right_value = self.env.get(left), self.env.get(right)
            self.problems.append(f"{left}={left_value!r} but {right}={right_value!r}")

    def expect(self, name: str, value: str) -> None:
        if self.env.get(name) != value:
            self.problems.append(f"{name}={self.env.get(name)!r}, expected {value!r}")

    def number(self, name: str) -> int:
        try:
            return int(self.env[name])
        except (KeyError, ValueError):
            self.problems.append(f"{name}={self.env.get(name)!r} is not a number")
            return -2


def check_always(c: Checker) -> None:
    if not c.need(*ALWAYS):
        return
    env = c.env
    c.expect("CAUCE_TASK_ID", f"{env['CAUCE_ROLE']}-{env['CAUCE_ROLE_INDEX']}")
    c.same("JOB_NAME", "CAUCE_ROLE")
    c.same("TASK_INDEX", "CAUCE_ROLE_INDEX")
    rank, size = c.number("CAUCE_RANK"), c.number("CAUCE_WORLD_SIZE")
    if not -1 <= rank < size:
        c.problems.append(f"CAUCE_RANK={rank} is outside [-1, {size})")
    cluster = json.loads(env["CLUSTER_SPEC"])
    if len(cluster.get(env["CAUCE_ROLE"], [])) != c.number("TASK_NUM"):
        c.problems.append(f"CLUSTER_SPEC lists {cluster.get(env['CAUCE_ROLE'])} for TASK_NUM")
    if env["IS_CHIEF"] not in ("true", "false"):
        c.problems.append(f"IS_CHIEF={env['IS_CHIEF']!r}")
    if not env["INIT_METHOD"].startswith("tcp://"):
        c.problems.append(f"INIT_METHOD={env['INIT_METHOD']!r}")
    if c.number("OMP_NUM_THREADS") < 1:
        c.problems.append("OMP_NUM_THREADS < 1")
    c.same("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def check_torch(c: Checker) -> None:
    if not c.need(*TORCH):
        return
    c.same("RANK", "CAUCE_RANK")
    c.same("WORLD_SIZE", "CAUCE_WORLD_SIZE")
    c.same("ROLE_NAME", "CAUCE_ROLE")
    c.same("TORCHELASTIC_RESTART_COUNT", "CAUCE_ATTEMPT")
    c.same("TORCHELASTIC_RUN_ID", "CAUCE_JOB_ID")
    c.expect("INIT_METHOD", f"tcp://{c.env['MASTER_ADDR']}:{c.env['MASTER_PORT']}")
    for index, size in (
        ("LOCAL_RANK", "LOCAL_WORLD_SIZE"),
        ("GROUP_RANK", "GROUP_WORLD_SIZE"),
        ("ROLE_RANK", "ROLE_WORLD_SIZE"),
    ):
        if not 0 <= c.number(index) < c.number(size):
            c.problems.append(f"{index}={c.env[index]} is outside [0, {c.env[size]})")


def check_framework(c: Checker, framework: str, rank: int) -> None:
    env = c.env
    if framework in ("pytorch", "none", "horovod") and rank >= 0:
        check_torch(c)
    if framework == "horovod" and rank >= 0 and c.need(*HOROVOD):
        c.same("HOROVOD_RANK", "RANK")
        c.same("HOROVOD_SIZE", "WORLD_SIZE")
        c.same("HOROVOD_LOCAL_RANK", "LOCAL_RANK")
        c.same("HOROVOD_LOCAL_SIZE", "LOCAL_WORLD_SIZE")
        c.expect("HOROVOD_CONTROLLER", "gloo")
        c.expect("HOROVOD_CPU_OPERATIONS", "gloo")
    if framework == "jax" and rank >= 0 and c.need("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES"):
        c.same("JAX_PROCESS_ID", "CAUCE_RANK")
        c.same("JAX_NUM_PROCESSES", "CAUCE_WORLD_SIZE")
    if framework == "tensorflow" and c.need("TF_CONFIG"):
        config = json.loads(env["TF_CONFIG"])
        task = config["task"]
        if (task["type"], task["index"]) != (env["CAUCE_ROLE"], int(env["CAUCE_ROLE_INDEX"])):
            c.problems.append(f"TF_CONFIG task {task} is not {env['CAUCE_TASK_ID']}")
        cluster = config["cluster"]
        world = [(r, i) for r in ("chief", "worker") for i in range(len(cluster.get(r, [])))]
        if (task["type"], task["index"]) in world:
            position = world.index((task["type"], task["index"]))
            if position != rank:
                c.problems.append(f"TF_CONFIG position {position} but CAUCE_RANK={rank}")
    if framework == "mxnet" and c.need("DMLC_ROLE", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER"):
        c.same("DMLC_ROLE", "CAUCE_ROLE")
        if "DMLC_RANK" in env:
            c.problems.append("DMLC_RANK is set: ps-lite would not record the id it is given")
        cluster = json.loads(env["CLUSTER_SPEC"])
        if "scheduler" in cluster:
            c.need("DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT")
            root = f"{env.get('DMLC_PS_ROOT_URI')}:{env.get('DMLC_PS_ROOT_PORT')}"
            if cluster["scheduler"] != [root]:
                c.problems.append(f"DMLC_PS_ROOT_* {root} is not the scheduler {cluster}")
        if c.number("DMLC_NUM_WORKER") != len(cluster.get("worker", [])):
            c.problems.append("DMLC_NUM_WORKER does not count the workers")


def probe_rendezvous(c: Checker) -> None:
    host, port = c.env["HOROVOD_GLOO_RENDEZVOUS_ADDR"], int(c.env["HOROVOD_GLOO_RENDEZVOUS_PORT"])
    path = f"/cauce-probe/{c.env['CAUCE_TASK_ID']}"
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        results = []
        for method, body in (("PUT", b"hello"), ("GET", None), ("DELETE", None), ("GET", None)):
            conn.request(method, path, body=body)
            response = conn.getresponse()
            results.append((response.status, response.read()))
    except OSError as exc:
        c.problems.append(f"rendezvous store {host}:{port} unreachable: {exc}")
        return
    finally:
        conn.close()
    if results != [(200, b""), (200, b"hello"), (200, b""), (404, b"")]:
        c.problems.append(f"rendezvous store answered {results}")


def tensorflow_reads_tf_config() -> str:
    """TF_CONFIG as TensorFlow parses it: a valid cluster, this task, and the same chief."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.distribute.cluster_resolver import TFConfigClusterResolver

    env = os.environ
    resolver = TFConfigClusterResolver()
    spec = resolver.cluster_spec()
    kind, index = resolver.task_type, resolver.task_id
    if (kind, index) != (env["CAUCE_ROLE"], int(env["CAUCE_ROLE_INDEX"])):
        raise SystemExit(f"TensorFlow reads task {kind}:{index}")
    multi_worker_util._validate_cluster_spec(spec, kind, index)
    if kind == "evaluator":
        if spec.jobs != ["evaluator"]:
            raise SystemExit(f"the evaluator sees {spec.as_dict()}")
    else:
        if "evaluator" in spec.jobs:
            raise SystemExit(f"{kind}:{index} sees the evaluator: {spec.as_dict()}")
        if multi_worker_util.is_chief(spec, kind, index) != (env["IS_CHIEF"] == "true"):
            raise SystemExit(f"TensorFlow's is_chief disagrees with IS_CHIEF={env['IS_CHIEF']}")
    return f"TensorFlow reads {kind}:{index} in {sorted(spec.jobs)}"


def use_framework(framework: str, rank: int) -> str:
    """Exercise the framework itself; returns what it did, for the log."""
    env = os.environ
    if framework == "tensorflow" and importlib.util.find_spec("tensorflow"):
        return tensorflow_reads_tf_config()
    if framework in ("pytorch", "none") and rank >= 0 and importlib.util.find_spec("torch"):
        import torch
        import torch.distributed as dist

        dist.init_process_group("gloo")
        value = torch.tensor([float(rank + 1)])
        dist.all_reduce(value)
        dist.destroy_process_group()
        size = int(env["WORLD_SIZE"])
        if value.item() != size * (size + 1) / 2:
            raise SystemExit(f"all_reduce gave {value.item()}")
        return f"torch all_reduce {value.item()}"
    if framework == "horovod" and rank >= 0 and importlib.util.find_spec("horovod"):
        import horovod.torch as hvd
        import torch

        hvd.init()
        total = hvd.allreduce(torch.tensor([float(hvd.rank() + 1)]), op=hvd.Sum)
        if (hvd.rank(), hvd.size()) != (rank, int(env["WORLD_SIZE"])):
            raise SystemExit(f"horovod rank/size {hvd.rank()}/{hvd.size()}")
        hvd.shutdown()
        return f"horovod allreduce {total.item()}"
    if framework == "mxnet" and importlib.util.find_spec("mxnet"):
        import mxnet as mx  # a server or the scheduler serves here, then exits

        kv = mx.kv.create("dist_sync")
        kv.init(3, mx.nd.zeros((2,)))
        kv.push(3, mx.nd.ones((2,)) * (kv.rank + 1))
        out = mx.nd.zeros((2,))
        kv.pull(3, out=out)
        workers = kv.num_workers
        if out.asnumpy().tolist() != [workers * (workers + 1) / 2] * 2:
            raise SystemExit(f"kvstore gave {out.asnumpy()}")
        return f"mxnet kvstore rank {kv.rank}/{workers}: {out.asnumpy().tolist()}"
    return "framework not importable here"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--probe-rendezvous", action="store_true")
    parser.add_argument("--use-framework", action="store_true")
    args = parser.parse_args()

    c = Checker()
    framework = c.env.get("CAUCE_FRAMEWORK", "")
    check_always(c)
    rank = int(c.env.get("CAUCE_RANK", "-1") or -1)
    if not c.problems:
        check_framework(c, framework, rank)
    if args.probe_rendezvous and framework == "horovod" and rank >= 0 and not c.problems:
        probe_rendezvous(c)
    task = c.env.get("CAUCE_TASK_ID", "?")
    if c.problems:
        for problem in c.problems:
            print(f"check_env {task}: {problem}", file=sys.stderr)
        return 1
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        mine = {
            name: value
            for name, value in c.env.items()
            if name in CONTRACT_NAMES or name.startswith(CONTRACT_PREFIXES)
        }
        with open(os.path.join(args.out, f"{task}.json"), "w", encoding="utf-8") as file:
            json.dump(mine, file, indent=1, sort_keys=True)
    done = use_framework(framework, rank) if args.use_framework else "framework not used"
    print(f"check_env {task}: {framework} variables consistent; {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
