"""The reaper: a tiny watchdog process that outlives its driver by a few seconds.

The driver starts one per job with a pipe on its stdin and writes ``+PGID`` when it starts a task
(each task leads its own process group) and ``-PGID`` once that group is gone. When the pipe
closes, whether the driver exited or was killed with SIGKILL, the reaper sends SIGTERM to every
group still listed, waits for a grace period, then SIGKILLs what is left. So no task outlives its
job. Standard library only: it is run as a script, with ``python -I -S``, to start fast.
"""

import contextlib
import os
import signal
import sys
import time


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(pgids: set[int], sig: int) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def main() -> int:
    grace = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    # Ctrl-C in the driver's terminal must not kill the reaper before it has done its work.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    groups: set[int] = set()
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if not line:
            continue
        try:
            pgid = int(line[1:])
        except ValueError:
            continue
        if line.startswith(b"+"):
            groups.add(pgid)
        elif line.startswith(b"-"):
            groups.discard(pgid)
    groups = {pgid for pgid in groups if _alive(pgid)}
    if not groups:
        return 0
    _signal(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        time.sleep(0.05)
        groups = {pgid for pgid in groups if _alive(pgid)}
    _signal(groups, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
