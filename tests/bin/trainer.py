"""trainer.py --epochs N --out DIR [--crash-epoch E] [--hang-after-epoch E]: a toy training loop
that uses the cauce runtime (context, report, checkpoint) and records what it did in DIR.

--crash-epoch E: in attempt 0, SIGKILL itself (rank 1 if there is one) in the middle of epoch E.
--hang-after-epoch E: stop reporting and sleep after epoch E (hang detection).
"""

import argparse
import json
import os
import signal
import time
from pathlib import Path

import cauce

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--out", required=True)
parser.add_argument("--crash-epoch", type=int)
parser.add_argument("--hang-after-epoch", type=int)
parser.add_argument("--steps", type=int, default=5)
args = parser.parse_args()

ctx = cauce.context()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
latest = cauce.checkpoint.load()
weight = latest.state["weight"] if latest else 0.0
start = latest.step + 1 if latest else 0
with open(out / f"{ctx.task_id}.log.jsonl", "a") as log:
    log.write(json.dumps({"attempt": ctx.attempt, "resumed_from": start}) + "\n")
    for epoch in range(start, args.epochs):
        for step in range(args.steps):
            weight += 0.1 * (1.0 - weight)
            cauce.report(epoch * args.steps + step, loss=(1.0 - weight) ** 2)
            time.sleep(0.02)
            crash_rank = 1 if ctx.world_size > 1 else 0
            if (
                epoch == args.crash_epoch
                and ctx.attempt == 0
                and step == args.steps // 2
                and ctx.rank == crash_rank
            ):
                os.kill(os.getpid(), signal.SIGKILL)
        cauce.checkpoint.save({"weight": weight}, step=epoch)
        log.write(json.dumps({"attempt": ctx.attempt, "epoch": epoch, "weight": weight}) + "\n")
        log.flush()
        if epoch == args.hang_after_epoch:
            time.sleep(600)
print(f"{ctx.task_id}: done, weight {weight:.6f}", flush=True)
