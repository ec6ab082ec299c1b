"""Reading a dataset several times larger than the memory budget stays within the budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

BUDGET = 64 << 20
ROWS = 7_000_000  # x 6 float64 columns = 336 MB decoded, 5 x the budget
COLUMNS = 6

READER = """
import json, sys
from cauce.data import shard


def status(key):  # kB, from the kernel's accounting of this process
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024


root, warm, budget, shuffle = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
# Load the code paths first (Arrow's and Parquet's libraries are paged in on first use).
for _ in shard(warm, batch_size=100, shuffle=shuffle, memory_budget=budget):
    pass
# Not ru_maxrss: Linux carries it over from the forked parent (pytest) across exec.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM, the peak resident set, to the current one
before = status("VmRSS")
rows = 0
for batch in shard(root, batch_size=1024, shuffle=shuffle, memory_budget=budget, seed=1):
    rows += len(batch["c0"])
print(json.dumps({"rows": rows, "growth": status("VmHWM") - before}))
"""


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    schema = pa.schema([(f"c{i}", pa.float64()) for i in range(COLUMNS)])
    per_file = ROWS // 4
    (root / "ds").mkdir()
    for f in range(4):
        with pq.ParquetWriter(root / "ds" / f"part-{f}.parquet", schema) as writer:
            for _ in range(0, per_file, 250_000):  # row groups of 12 MB
                columns = {f"c{i}": rng.random(250_000) for i in range(COLUMNS)}
                writer.write_table(pa.table(columns, schema=schema), row_group_size=250_000)
    pq.write_table(
        pa.table({f"c{i}": np.zeros(1000) for i in range(COLUMNS)}), root / "warm.parquet"
    )
    return root / "ds", root / "warm.parquet"


@pytest.mark.slow
@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
def test_peak_rss_stays_within_the_budget(big: tuple[Path, Path], shuffle: bool) -> None:
    root, warm = big
    size = sum(p.stat().st_size for p in root.iterdir())
    assert size > 4 * BUDGET
    out = subprocess.run(
        [sys.executable, "-c", READER, str(root), str(warm), str(BUDGET), "1" if shuffle else "0"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"peak RSS growth {result['growth'] / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB dataset"
    )
    assert result["rows"] == ROWS
    growth_mib = result["growth"] / 2**20
    assert growth_mib < BUDGET / 2**20, f"peak RSS grew by {growth_mib:.0f} MiB"
