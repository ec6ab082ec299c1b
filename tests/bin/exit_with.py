"""exit_with.py CODE [--after SECONDS] [--only-task TASK_ID] [--when FILE]: print a few
lines, then exit.

With --only-task, tasks other than TASK_ID exit 0 at once (others succeed, one fails). With
--when, the SECONDS start once FILE exists (120 s at most): another task is known to run.
"""

import argparse
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("code", type=int)
parser.add_argument("--after", type=float, default=0.0)
parser.add_argument("--only-task")
parser.add_argument("--when")
args = parser.parse_args()
me = os.environ.get("CAUCE_TASK_ID", "?")
if args.only_task and me != args.only_task:
    print(f"{me}: nothing to do", flush=True)
    sys.exit(0)
print(f"{me}: starting, attempt {os.environ.get('CAUCE_ATTEMPT')}", flush=True)
if args.when:
    deadline = time.monotonic() + 120
    while not os.path.exists(args.when) and time.monotonic() < deadline:
        time.sleep(0.05)
time.sleep(args.after)
print(f"{me}: something went wrong, exiting with {args.code}", flush=True)
sys.exit(args.code)
