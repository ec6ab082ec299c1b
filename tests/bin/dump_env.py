"""dump_env.py FOLDER [SECONDS [GATE]]: write this task's environment as JSON, then sleep
SECONDS; with GATE, wait until the file GATE exists instead (SECONDS at most)."""

import json
import os
import sys
import time
from pathlib import Path

folder = Path(sys.argv[1])
folder.mkdir(parents=True, exist_ok=True)
task = os.environ.get("CAUCE_TASK_ID", "task")
job = os.environ.get("CAUCE_JOB_ID", "job")
(folder / f"{job}.{task}.json").write_text(json.dumps(dict(os.environ)))
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
if len(sys.argv) > 3:
    deadline = time.monotonic() + seconds
    while not Path(sys.argv[3]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
else:
    time.sleep(seconds)
