"""host_probe.py [--rendezvous]: print where this task runs and the addresses its contract names;
with --rendezvous, open a TCP connection to Horovod's Gloo rendezvous (exit 3 if it fails)."""

import os
import socket
import sys

task = os.environ.get("CAUCE_TASK_ID", "task")
me = socket.gethostbyname(socket.gethostname())
master = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
print(f"{task}: host {me} master {master}", flush=True)
if "--rendezvous" in sys.argv:
    where = os.environ["HOROVOD_GLOO_RENDEZVOUS_ADDR"], os.environ["HOROVOD_GLOO_RENDEZVOUS_PORT"]
    try:
        socket.create_connection((where[0], int(where[1])), timeout=5).close()
    except OSError as exc:
        print(f"{task}: rendezvous {where[0]}:{where[1]} unreachable from {me}: {exc}", flush=True)
        sys.exit(3)
    print(f"{task}: rendezvous {where[0]}:{where[1]} reached from {me}", flush=True)
