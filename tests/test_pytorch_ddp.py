"""Real PyTorch DDP over Gloo: 2 ranks under `cauce run`, and the same script under torchrun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, cauce, write_job

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.slow, pytest.mark.framework]

SCRIPT = ROOT / "examples" / "ddp" / "train.py"


def check_training(out: Path, world: int) -> None:
    params = [torch.load(out / f"params-{rank}.pt") for rank in range(world)]
    assert all(torch.equal(params[0], other) for other in params[1:])
    losses = json.loads((out / "losses-0.json").read_text())
    assert losses[-1] < 0.2 * losses[0], losses


def test_ddp_two_ranks_under_cauce(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    out = tmp_path / "out"
    path = write_job(
        tmp_path,
        f"""
        name: ddp
        framework: pytorch
        command: python {SCRIPT} --steps 40 --out {out}
        roles:
          worker:
            instances: 2
            resources: {{cpus: 1}}
        """,
    )
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "parameters identical on all ranks: True" in done.stdout
    check_training(out, 2)


def test_same_script_under_torchrun(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(SCRIPT),
            "--steps",
            "40",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    check_training(out, 2)


def test_main_example_job_file(cauce_env: dict[str, str]) -> None:
    """The README's main example, as it is."""
    done = cauce(["run", str(ROOT / "examples" / "ddp" / "job.yaml")], cauce_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "parameters identical on all ranks: True" in done.stdout
