"""stop_rank.py FOLDER RANK: the rank RANK reports a few steps, writes FOLDER/<task>.pid and
stops itself with SIGSTOP (as a debugger or a job-control mistake would). Every other rank waits
for FOLDER/done, which the stopped rank would write, and reports nothing meanwhile: in a real
gang it would be blocked in a collective."""

import os
import signal
import sys
import time
from pathlib import Path

import cauce

folder, stopped = Path(sys.argv[1]), int(sys.argv[2])
folder.mkdir(parents=True, exist_ok=True)
task = os.environ["CAUCE_TASK_ID"]
(folder / f"{task}.pid").write_text(str(os.getpid()))
if int(os.environ["RANK"]) == stopped:
    for step in range(3):
        cauce.report(step, loss=1.0 / (step + 1))
        time.sleep(0.1)
    print(f"{task}: stopping myself", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
    (folder / "done").write_text("done")
else:
    while not (folder / "done").exists():
        time.sleep(0.05)
