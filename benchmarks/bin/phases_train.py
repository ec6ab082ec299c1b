"""A small 2-rank DDP training job that records when each of its phases ends (``phases.py``).

It runs unchanged under ``cauce run`` and ``torchrun``: the rendezvous comes from the
environment both set (``MASTER_ADDR``, ``RANK``, ...), the data from ``cauce.data.shard`` (which
reads ``RANK``/``WORLD_SIZE`` under torchrun), checkpoints from ``cauce.checkpoint.save`` into
``$CAUCE_RUN_DIR/checkpoints`` (cauce sets it; the benchmark gives torchrun's ranks a fresh one
per run). Each rank writes ``--out/rank-N.json``: Unix times (``time.time()``) at its first
line, after its imports, after ``init_process_group``, after opening the data, and the seconds
of each epoch's training (and of its waiting for batches), evaluation and checkpoint, and its
last line.

``build`` is the function ``cauce.data.prepare`` runs to make the dataset (``phases.py`` does).
"""

import time

FIRST_LINE = time.time()  # the first line the interpreter runs: the end of "launch"

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

FEATURES = 16


def build(ctx: Any) -> dict[str, Any]:
    """A generated binary classification table: ``FEATURES`` floats and a label."""
    import numpy as np
    import pyarrow as pa

    rows = int(os.environ.get("PHASES_ROWS", "200000"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, FEATURES)).astype(np.float32)
    w = rng.standard_normal(FEATURES).astype(np.float32)
    y = ((x @ w + rng.standard_normal(rows).astype(np.float32)) > 0).astype(np.float32)
    table = pa.table({"id": np.arange(rows), **{f"x{i}": x[:, i] for i in range(FEATURES)}, "y": y})
    t = ctx.table("generated", table)
    return {
        "train": t.filter(t.id % 10 != 0).order_by("id"),
        "validation": t.filter(t.id % 10 == 0).order_by("id"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="the prepared dataset")
    parser.add_argument("--out", required=True, help="folder for rank-N.json")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=128, help="width of the model")
    parser.add_argument("--background", action="store_true", help="save checkpoints off-thread")
    args = parser.parse_args()

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import cauce
    import cauce.data

    times: dict[str, Any] = {"first_line": FIRST_LINE, "imports": time.time()}
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    times["rendezvous"] = time.time()

    names = [f"x{i}" for i in range(FEATURES)]

    def batches(split: str, epoch: int, **kwargs: Any) -> cauce.data.Shard:
        return cauce.data.shard(
            args.data,
            split,
            batch_size=args.batch_size,
            columns=[*names, "y"],
            epoch=epoch,
            format="torch",
            **kwargs,
        )

    first = batches("train", 0, shuffle=True, seed=0, even="pad")
    times["open_data"] = time.time()

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, args.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(args.hidden, args.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(args.hidden, 1),
    )
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    epochs: list[float] = []
    evals: list[float] = []
    saves: list[float] = []
    reading: list[float] = []  # of the epochs: waiting for the next training batch
    accuracy = 0.0
    for epoch in range(args.epochs):
        start = time.time()
        shard = first if epoch == 0 else batches("train", epoch, shuffle=True, seed=0, even="pad")
        ddp.train()
        batches_in = iter(shard)
        waited = 0.0
        while True:
            asked = time.perf_counter()
            batch = next(batches_in, None)  # reading and decoding, or cutting from memory
            waited += time.perf_counter() - asked
            if batch is None:
                break
            x = torch.stack([batch[n] for n in names], dim=1)
            optimizer.zero_grad()
            loss = loss_fn(ddp(x).squeeze(1), batch["y"])
            loss.backward()
            optimizer.step()
        mid = time.time()
        ddp.eval()
        right = torch.zeros(2)
        with torch.no_grad():
            for batch in batches("validation", 0):
                x = torch.stack([batch[n] for n in names], dim=1)
                guess = (model(x).squeeze(1) > 0).float()
                right += torch.tensor([float((guess == batch["y"]).sum()), float(len(guess))])
        dist.all_reduce(right)
        accuracy = float(right[0] / right[1])
        end = time.time()
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
        if args.background:
            cauce.checkpoint.save(state, step=epoch, background=True)
        else:
            cauce.checkpoint.save(state, step=epoch)
        dist.barrier()  # no rank goes on before the checkpoint is saved (as train.py does)
        epochs.append(mid - start)
        reading.append(waited)
        evals.append(end - mid)
        saves.append(time.time() - end)
    if args.background:
        start = time.time()
        cauce.checkpoint.wait()  # every write on disk before the job says it is done
        saves.append(time.time() - start)
    times.update(
        epochs=epochs, reading=reading, evaluation=evals, checkpoints=saves, accuracy=accuracy
    )
    times["last_line"] = time.time()  # what follows (leaving the group, exiting) is "exit"
    Path(args.out, f"rank-{rank}.json").write_text(json.dumps(times), encoding="utf-8")
    dist.barrier()  # leave together (see benchmarks/bin/allreduce.py)
    del ddp  # before the group: see leave_process_group in examples/flights/train.py
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
