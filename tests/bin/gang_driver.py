"""gang_driver.py MASTER CONF_JSON: a cauce driver process that the gang contract tests steer.

Run on the multi-host cluster's driver host (``MultiHost.popen_on("d", ...)``), where the
tests' own process cannot run a driver. It keeps one Spark application open on MASTER (warm
executors, as ``spark_fixtures.HeldApp`` does in-process) and reads one JSON request per line:

    {"run": JOB_PATH, "home": DIR, "history": URL, "poll": S}   run a job (one at a time)
    {"stop": REASON}                                            JobDriver.stop on the job
    {"ask_to_stop": REASON}                                     JobDriver.ask_to_stop
    {"quit": true}                                              close the application, exit

and answers one JSON line per event: ``{"ready": true}`` once the executors are up,
``{"reported": true}`` at the job's first metrics, ``{"result": {...}, "console": TEXT}`` at its
end. Stdin closed (the tests ended or died) -> quit.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import cauce
from cauce.cluster import get_cluster
from cauce.gang import JobDriver
from cauce.history import open_store

_out_lock = threading.Lock()


def say(message: dict[str, object]) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


class Console:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.lock = threading.Lock()

    def status(self, text: str) -> None:
        with self.lock:
            self.lines.append(f"cauce: {text}")

    def output(self, task_id: str, line: str) -> None:
        with self.lock:
            self.lines.append(f"[{task_id}] {line}")


def run_job(
    request: dict[str, str], master: str, conf: dict[str, str], slot: list[JobDriver]
) -> None:
    spec = cauce.load_job(request["run"])
    store = open_store(request["history"])
    console = Console()
    reported = threading.Event()

    def on_metrics(rows: object) -> None:
        if not reported.is_set():
            reported.set()
            say({"reported": True})

    cluster = get_cluster(master, spark_conf={**conf, **dict(spec.spark)})
    try:
        driver = JobDriver(
            spec,
            cluster,
            store,
            Path(request["home"]),
            console=console,
            poll_interval=float(request.get("poll", 1.0)),
            on_metrics=on_metrics,
        )
        slot[:] = [driver]
        result = driver.run()
    finally:
        slot.clear()
        cluster.close()
        store.close()
    fields = {
        "job_id": result.job_id,
        "status": str(result.status),
        "root_cause": result.root_cause,
        "attempts": result.attempts,
        "restarts": result.restarts,
        "run_dir": result.run_dir,
    }
    say({"result": fields, "console": "\n".join(console.lines)})


def main() -> int:
    master, conf = sys.argv[1], json.loads(sys.argv[2])
    held = get_cluster(master, spark_conf=conf)
    shared = held.session()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 180
    while len(shared.executors()) < int(sys.argv[3]) and time.monotonic() < deadline:
        time.sleep(0.3)
    count = len(shared.executors())
    shared.sc.parallelize(range(count), count).map(str)._jrdd.count()  # start the Python workers
    say({"ready": True, "executors": count})
    slot: list[JobDriver] = []
    worker: threading.Thread | None = None
    for line in sys.stdin:
        request = json.loads(line)
        if "run" in request:
            worker = threading.Thread(target=run_job, args=(request, master, conf, slot))
            worker.start()
        elif "stop" in request and slot:
            slot[0].stop(request["stop"])
        elif "ask_to_stop" in request and slot:
            slot[0].ask_to_stop(request["ask_to_stop"])
        elif "quit" in request:
            break
    if worker is not None:
        if slot:
            slot[0].stop("the tests ended")
        worker.join(timeout=120)
    held.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
