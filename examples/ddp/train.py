"""A small PyTorch DDP training script: it runs the same under `cauce run` and `torchrun`.

It reads only torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), fits a small MLP
to a synthetic regression with DistributedDataParallel over Gloo, and checks at the end that the
parameters are identical on every rank. With --out DIR each rank writes its parameters and
losses there, for tests.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--out", help="folder for each rank's final parameters and losses")
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same initial weights and target on every rank
    true_w = torch.randn(16, 1)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1)))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    data = torch.Generator().manual_seed(1000 + rank)  # each rank its own batches

    losses = []
    for step in range(args.steps):
        x = torch.randn(args.batch_size, 16, generator=data)
        y = x @ true_w + 0.01 * torch.randn(args.batch_size, 1, generator=data)
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # The mean loss over ranks, so every rank prints the same curve.
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / world)
        if rank == 0 and (step % 20 == 0 or step == args.steps - 1):
            print(f"step {step:3d} loss {losses[-1]:.4f}", flush=True)

    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    identical = all(torch.equal(gathered[0], other) for other in gathered[1:])
    if rank == 0:
        print(
            f"trained {world} ranks: loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
            f"parameters identical on all ranks: {identical}",
            flush=True,
        )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(flat, out / f"params-{rank}.pt")
        (out / f"losses-{rank}.json").write_text(json.dumps(losses))
    # Leave together: a rank tearing Gloo down while its peer is still in a collective can
    # abort the peer ("terminate called without an active exception").
    dist.barrier()
    # DDP before the group: freed last by DDP, the group can wait for Gloo's threads with the
    # GIL held while one of them needs it, and the rank never exits (see leave_process_group
    # in examples/flights/train.py)
    del model
    dist.destroy_process_group()
    if not identical:
        raise SystemExit("parameters differ between ranks")
    if os.environ.get("LOCAL_RANK") is None:
        raise SystemExit("LOCAL_RANK is not set: run this under cauce run or torchrun")


if __name__ == "__main__":
    main()
