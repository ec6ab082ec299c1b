"""sleeper.py PIDFILE_DIR [SECONDS]: record this task's pid and a child's pid, then sleep.

The child (a grandchild of cauce) is in the task's process group; a test checks both are gone.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

folder = Path(sys.argv[1])
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 600.0
folder.mkdir(parents=True, exist_ok=True)
child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
task = os.environ.get("CAUCE_TASK_ID", "task")
(folder / f"{task}.pids").write_text(f"{os.getpid()} {child.pid}\n")
print(f"{task}: sleeping", flush=True)
time.sleep(seconds)
child.wait()
