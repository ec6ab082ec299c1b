"""The ``tensorboard:`` section of a job: the folder its tasks write to, and the chief's port.

Every task gets ``CAUCE_TENSORBOARD_DIR``, one folder for the job shared by its tasks
(``<logdir>/<job id>``, or ``<run folder>/tensorboard`` without a logdir), and, with
``report: true``, ``CAUCE_TENSORBOARD_REPORT=1``, which makes ``cauce.report`` write its values
there as scalars (one run per task). The chief (the task whose ``IS_CHIEF`` is true) also gets
TonY's ``TB_PORT``: a port for a TensorBoard it may start itself, free on the driver's host when
the attempt starts (on Spark, not reserved on the executor's host).
"""

from __future__ import annotations

import os

from cauce.cluster import free_ports
from cauce.spec import JobSpec, TensorBoardSpec

__all__ = [
    "make_tensorboard_dir",
    "tensorboard_chief_env",
    "tensorboard_dir",
    "tensorboard_env",
]


def tensorboard_dir(section: TensorBoardSpec, job_id: str, run_dir: str) -> str:
    """The job's TensorBoard folder."""
    if section.logdir is None:
        return os.path.join(run_dir, "tensorboard")
    return os.path.join(section.logdir, job_id)


def tensorboard_env(spec: JobSpec, job_id: str, run_dir: str) -> dict[str, str]:
    """The variables of every task; empty without a ``tensorboard:`` section."""
    if spec.tensorboard is None:
        return {}
    env = {"CAUCE_TENSORBOARD_DIR": tensorboard_dir(spec.tensorboard, job_id, run_dir)}
    if spec.tensorboard.report:
        env["CAUCE_TENSORBOARD_REPORT"] = "1"
    return env


def tensorboard_chief_env(spec: JobSpec) -> dict[str, str]:
    """TonY's ``TB_PORT`` for the chief, fresh for each attempt; empty without the section."""
    if spec.tensorboard is None:
        return {}
    return {"TB_PORT": str(free_ports(1)[0])}


def make_tensorboard_dir(spec: JobSpec, job_id: str, run_dir: str) -> None:
    """Create the job's folder, so that TensorBoard can watch it from the start."""
    if spec.tensorboard is not None:
        os.makedirs(tensorboard_dir(spec.tensorboard, job_id, run_dir), exist_ok=True)
