"""dump_env.py FOLDER [SECONDS]: write this task's environment as JSON, then sleep a while."""

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
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
