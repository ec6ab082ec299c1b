"""A PyTorchJob script as written for Kubeflow, started by ``torchrun`` with no option.

The task's command is ``python -m torch.distributed.run kubeflow_torch.py --out DIR``: torchrun
takes its number of nodes, node rank, processes per node and master from the ``PET_*`` variables
(as in a Kubeflow pod) and starts one worker, which joins with ``init_process_group("gloo")``
(``env://``, torchrun's variables), sums ``rank + 1`` over the world and writes
``OUT/torch-<rank>.json``. Without the ``PET_*`` names each torchrun would make a world of one,
and the sum would be 1. No cauce import.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.distributed as dist


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    value = torch.tensor([rank + 1.0])
    dist.all_reduce(value)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"torch-{rank}.json"), "w", encoding="utf-8") as file:
        json.dump({"rank": rank, "world": world, "sum": float(value.item())}, file)
    print(f"rank {rank}/{world}: sum {value.item()}")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
