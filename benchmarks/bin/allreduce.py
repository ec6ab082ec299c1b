"""A 2-rank Gloo all-reduce, the workload of ``benchmarks/launch.py``.

It reads the rendezvous from the environment (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
``WORLD_SIZE``), as ``torchrun`` and ``cauce`` both set it, all-reduces a tensor of 1M floats a few
times, checks the sum and exits: 0 when the result is right, 1 otherwise.
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5, help="how many all-reduces (default 5)")
    parser.add_argument("--numel", type=int, default=1_000_000, help="floats in the tensor")
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tensor = torch.ones(args.numel)
    for _ in range(args.steps):
        dist.all_reduce(tensor)  # a sum: every element is multiplied by the world size
    expected = float(world**args.steps)
    ok = bool(torch.all(tensor == expected))
    dist.barrier()  # leave together (see examples/ddp/train.py)
    dist.destroy_process_group()
    if not ok:
        print(f"rank {rank}: wrong sum, expected {expected:g} everywhere", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
