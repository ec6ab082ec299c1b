"""One process of a multi-process JAX job on CPU: a sum across processes.

Joins the job with ``cauce.frameworks.jax.initialize()`` (coordinator, number of processes and
process id from cauce's variables), makes a global array whose shard on process ``p`` holds
``p + 1``, sums it under ``jit`` (Gloo carries the cross-process collective) and writes
``OUT/jax-<p>.json`` with the sum, which must be ``n (n + 1) / 2`` on every process.

    python jax_psum.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from cauce.frameworks.jax import initialize


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("JAX_PSUM_OUT"))
    args = parser.parse_args()
    if not args.out:
        parser.error("--out (or JAX_PSUM_OUT) is required")

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    initialize(initialization_timeout=60)
    process, processes = jax.process_index(), jax.process_count()

    mesh = jax.make_mesh((jax.device_count(),), ("i",))
    local = np.full((jax.local_device_count(),), process + 1.0, dtype=np.float32)
    spread = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("i")), local)
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(spread)
    value = float(np.asarray(total.addressable_data(0)))

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"jax-{process}.json"), "w", encoding="utf-8") as file:
        json.dump(
            {
                "process": process,
                "processes": processes,
                "devices": jax.device_count(),
                "local_devices": jax.local_device_count(),
                "sum": value,
                "rank": os.environ.get("CAUCE_RANK"),
            },
            file,
        )
    print(f"process {process}/{processes}: sum {value}")
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
