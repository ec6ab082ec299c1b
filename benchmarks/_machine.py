"""The machine under a benchmark: its cores and its load average before and after the run.

Every benchmark makes one :class:`Machine` when it starts and adds :meth:`Machine.finish` to
the JSON object of its last line: ``cores``, ``load_before`` and ``load_after`` (the 1-minute
load average) and ``noisy``, true when either reading exceeds the core count. The reading
after includes the benchmark's own work: one that keeps more threads runnable than there are
cores marks itself noisy, and its figures are noisy then too.

``CAUCE_BENCH_QUICK=1`` (set by ``bash scripts/bench.sh --quick``) makes every benchmark's
``--quick`` the default: a short smoke run, whose figures are not for quoting.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

QUICK_ENV = "CAUCE_BENCH_QUICK"


def quick_default() -> bool:
    """Whether ``CAUCE_BENCH_QUICK`` asks for quick runs (any value but empty or ``0``)."""
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


def tool(name: str) -> str:
    """The console script ``name`` of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"error: {name} not found next to {sys.executable} nor on PATH")
    return found


def can_import(python: str, module: str) -> str:
    """'' when the interpreter ``python`` imports ``module``, else the last line of its error
    (a peer that lives in its own environment is skipped with that reason)."""
    argv = [python, "-c", f"import {module}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    return "" if out.returncode == 0 else (out.stderr.strip().splitlines() or ["failed"])[-1]


def _load() -> float:
    return round(os.getloadavg()[0], 2)


class Machine:
    """Reads the load average now; :meth:`finish` reads it again and says if the run was noisy."""

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self.load_before = _load()
        print(
            f"machine  {self.cores} cores, load average {self.load_before:.2f} before the run",
            flush=True,
        )

    def finish(self) -> dict[str, Any]:
        """The machine's figures for the last line, printed too."""
        after = _load()
        noisy = max(self.load_before, after) > self.cores
        print(
            f"machine  {self.cores} cores, load average {self.load_before:.2f} before, "
            f"{after:.2f} after"
            + (f": NOISY (above {self.cores}), ratios may be off" if noisy else ""),
            flush=True,
        )
        return {
            "cores": self.cores,
            "load_before": self.load_before,
            "load_after": after,
            "noisy": noisy,
        }
