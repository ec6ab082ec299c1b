"""gpu_holder.py FOLDER [--stubborn]: write FOLDER/<task>.start (the time this task started, its
pid, a child's pid and CUDA_VISIBLE_DEVICES) as JSON, then exit 0.

With --stubborn, the task and its child ignore SIGTERM and sleep until SIGKILL: a task that
keeps its GPUs busy through the whole grace period of a teardown.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

started = time.time()
folder = Path(sys.argv[1])
stubborn = "--stubborn" in sys.argv[2:]
if stubborn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the child: ignored stays ignored
child = (
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) if stubborn else None
)
task = os.environ.get("CAUCE_TASK_ID", "task")
record = {
    "started": started,
    "pid": os.getpid(),
    "child": child.pid if child else None,
    "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
}
folder.mkdir(parents=True, exist_ok=True)
temp = folder / f".{task}.tmp"
temp.write_text(json.dumps(record))
temp.rename(folder / f"{task}.start")
print(f"{task}: started", flush=True)
if stubborn:
    time.sleep(600)
