"""host_probe.py [--rendezvous]: print where this task runs and the addresses its contract names;
with --rendezvous, meet the other ranks at Horovod's Gloo key-value store as Gloo's rendezvous
does (HTTP PUT of this rank's address under a scope, GET of every other rank's until all are
there), exiting 3 if the store cannot be reached or the exchange does not complete."""

import os
import socket
import sys
import time
import urllib.error
import urllib.request

task = os.environ.get("CAUCE_TASK_ID", "task")
me = socket.gethostbyname(socket.gethostname())
master = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
print(f"{task}: host {me} master {master}", flush=True)


def exchange(base: str, rank: int, size: int) -> list[str]:
    """PUT this rank's address, then GET every rank's (404 while absent, as Gloo polls)."""
    put = urllib.request.Request(f"{base}/probe/rank-{rank}", data=me.encode(), method="PUT")
    urllib.request.urlopen(put, timeout=10).close()
    found: dict[int, str] = {}
    deadline = time.monotonic() + 120
    while len(found) < size:
        for other in range(size):
            if other in found:
                continue
            try:
                with urllib.request.urlopen(f"{base}/probe/rank-{other}", timeout=10) as answer:
                    found[other] = answer.read().decode()
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
                exc.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"only ranks {sorted(found)} of {size} in the store")
        time.sleep(0.2)
    return [found[r] for r in range(size)]


if "--rendezvous" in sys.argv:
    where = os.environ["HOROVOD_GLOO_RENDEZVOUS_ADDR"], os.environ["HOROVOD_GLOO_RENDEZVOUS_PORT"]
    try:
        socket.create_connection((where[0], int(where[1])), timeout=5).close()
    except OSError as exc:
        print(f"{task}: rendezvous {where[0]}:{where[1]} unreachable from {me}: {exc}", flush=True)
        sys.exit(3)
    print(f"{task}: rendezvous {where[0]}:{where[1]} reached from {me}", flush=True)
    rank, size = int(os.environ["HOROVOD_RANK"]), int(os.environ["HOROVOD_SIZE"])
    try:
        hosts = exchange(f"http://{where[0]}:{where[1]}", rank, size)
    except (OSError, TimeoutError) as exc:
        print(f"{task}: key-value exchange failed: {exc}", flush=True)
        sys.exit(3)
    print(f"{task}: key-value exchange done, ranks on {','.join(hosts)}", flush=True)
