"""gated_reports.py GATE: report loss at steps 0-2, wait for the file GATE (60 s at most),
then report steps 3-5 and exit 0."""

import sys
import time
from pathlib import Path

import cauce

gate = Path(sys.argv[1])
for step in range(6):
    if step == 3:
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            cauce.heartbeat()
            time.sleep(0.1)
    cauce.report(step, loss=1.0 / (step + 1))
print("reported 6 steps", flush=True)
