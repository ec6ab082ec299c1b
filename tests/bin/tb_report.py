"""Reports ``loss`` and ``acc`` for 5 steps with ``cauce.report`` (nothing about TensorBoard in
it) and writes the TensorBoard variables it was given to ``OUT/<task>.json``.

    python tb_report.py OUT
"""

from __future__ import annotations

import json
import os
import sys

import cauce


def main() -> int:
    out = sys.argv[1]
    task = os.environ["CAUCE_TASK_ID"]
    rank = int(os.environ["CAUCE_RANK"])
    for step in range(5):
        cauce.report(step, loss=1.0 / (step + 1) + rank, acc=0.1 * step)
    names = ("CAUCE_TENSORBOARD_DIR", "CAUCE_TENSORBOARD_REPORT", "TB_PORT", "IS_CHIEF")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{task}.json"), "w", encoding="utf-8") as file:
        json.dump({name: os.environ.get(name) for name in names}, file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
