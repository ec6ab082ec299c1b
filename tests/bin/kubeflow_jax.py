"""A JAXJob script as written for Kubeflow: ``jax.distributed.initialize`` from the Training
Operator's names alone (``COORDINATOR_ADDRESS``, ``COORDINATOR_PORT``, ``NUM_PROCESSES``,
``PROCESS_ID``), as in its ``examples/jax/cpu-demo/train.py``. Sums ``process + 1`` across the
processes (Gloo carries the collective on CPU) and writes ``OUT/jax-<process>.json``. No cauce
import.

    python kubeflow_jax.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    address = f"{os.environ['COORDINATOR_ADDRESS']}:{int(os.environ['COORDINATOR_PORT'])}"
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=int(os.environ["NUM_PROCESSES"]),
        process_id=int(os.environ["PROCESS_ID"]),
        initialization_timeout=60,
    )
    process, processes = jax.process_index(), jax.process_count()
    gathered = multihost_utils.process_allgather(np.array([process + 1.0], dtype=np.float32))
    total = float(np.sum(gathered))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"jax-{process}.json"), "w", encoding="utf-8") as file:
        json.dump({"process": process, "processes": processes, "sum": total}, file)
    print(f"process {process}/{processes}: sum {total}")
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
