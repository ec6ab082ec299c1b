"""A small pipeline for the tests, without torch: prepare on DuckDB (a CSV of generated rows),
then two jobs of framework none that count the rows of a split they read through a reference to
the prepared dataset, the second one getting the first one's count as a parameter."""

from __future__ import annotations

from pathlib import Path

from data_fixtures import write_csv, write_module
from helpers import write_job

COUNT = '''
"""Count the rows of a prepared split; write them to the run folder."""
import json, os, sys
import cauce, cauce.data

manifest = cauce.data.read_manifest(os.environ["DATA"])
rows = manifest.rows[sys.argv[1]]
cauce.report(0, rows=rows)
ctx = cauce.context()
ctx.run_dir.mkdir(parents=True, exist_ok=True)
(ctx.run_dir / "out.json").write_text(json.dumps({"rows": rows, "params": dict(ctx.params)}))
print("counted", rows)
'''


def write_small(folder: Path, csv_rows: int = 40) -> Path:
    csv = write_csv(folder / "src.csv", csv_rows)
    write_module(folder, csv)
    (folder / "count.py").write_text(COUNT)
    write_job(
        folder,
        """
        name: count
        framework: none
        command: python count.py
        roles: {worker: {resources: {cpus: 0.5}}}
        """,
    )
    return write_job(
        folder,
        """
        name: small
        steps:
          prepare:
            function: build_mod.py:build
          train:
            job: job.yaml
            args: [train]
            env:
              DATA: ${steps.prepare.outputs.dataset}
            outputs:
              result: out.json
          after:
            kind: run
            job: job.yaml
            args: [test]
            params:
              train_rows: ${steps.train.json.result.rows}
            env:
              DATA: ${steps.prepare.outputs.dataset}
            outputs: {result: out.json}
        """,
        name="pipeline.yaml",
    )


def statuses(stderr: str) -> dict[str, str]:
    """Step -> 'ran' or 'skipped', from the step lines."""
    found: dict[str, str] = {}
    for line in stderr.splitlines():
        if line.startswith("[") and "] " in line:
            step, rest = line[1:].split("] ", 1)
            if rest.startswith("skipped: up to date") or "up to date, nothing ran" in rest:
                found[step] = "skipped"
            elif " succeeded" in rest or rest.startswith("written"):
                found[step] = "ran"
    return found
