"""trainer.py --epochs N --out DIR [--crash-epoch E] [--hang-after-epoch E]: a toy training loop
that uses the cauce runtime (context, report, checkpoint) and records what it did in DIR.

--crash-epoch E: in attempt 0, rank 0 SIGKILLs itself in the middle of epoch E.
--hang-after-epoch E: stop reporting and sleep after epoch E (hang detection).
--corrupt-epoch E: in attempt 0, rank 0 truncates the checkpoint of epoch E right after saving
it, then SIGKILLs itself (a checkpoint damaged after it was written, then a crash).
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
parser.add_argument("--corrupt-epoch", type=int)
parser.add_argument("--steps", type=int, default=5)
args = parser.parse_args()

ctx = cauce.context()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
# Ranks start at slightly different times (on Spark, up to a second apart): a rank of a fresh
# attempt must not pick up a checkpoint that a faster rank of the same attempt has just written,
# but the one the attempt before left (a real script would agree on it with a barrier).
latest = cauce.checkpoint.load() if ctx.attempt > 0 else None
while latest is not None and latest.meta.get("attempt") == ctx.attempt:
    latest = cauce.checkpoint.load(step=latest.step - 1) if latest.step > 0 else None
weight = latest.state["weight"] if latest else 0.0
start = latest.step + 1 if latest else 0
with open(out / f"{ctx.task_id}.log.jsonl", "a") as log:
    log.write(json.dumps({"attempt": ctx.attempt, "resumed_from": start}) + "\n")
    for epoch in range(start, args.epochs):
        for step in range(args.steps):
            weight += 0.1 * (1.0 - weight)
            cauce.report(epoch * args.steps + step, loss=(1.0 - weight) ** 2)
            time.sleep(0.02)
            # rank 0 writes the checkpoints, so killing it mid-epoch pins where training resumes
            if (
                epoch == args.crash_epoch
                and ctx.attempt == 0
                and step == args.steps // 2
                and ctx.rank == 0
            ):
                os.kill(os.getpid(), signal.SIGKILL)
        saved = cauce.checkpoint.save({"weight": weight}, step=epoch)
        if epoch == args.corrupt_epoch and ctx.attempt == 0 and saved is not None:
            state = saved / "state.pkl"
            state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        log.write(json.dumps({"attempt": ctx.attempt, "epoch": epoch, "weight": weight}) + "\n")
        log.flush()
        if epoch == args.hang_after_epoch:
            time.sleep(600)
print(f"{ctx.task_id}: done, weight {weight:.6f}", flush=True)
