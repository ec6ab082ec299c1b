"""``cauce.context()``: who this task is, read once from the environment the driver set.

Under plain ``python`` (no cauce driver) it describes a world of one: rank 0 of 1, attempt 0,
with its run folder at ``$CAUCE_RUN_DIR`` or ``./cauce-run``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Context", "context"]


@dataclass(frozen=True)
class Context:
    job_id: str
    job_name: str
    task_id: str
    role: str
    index: int
    rank: int
    world_size: int
    local_rank: int
    attempt: int
    framework: str
    run_dir: Path
    checkpoint_dir: Path
    artifact_dir: Path
    params: Mapping[str, Any] = field(default_factory=dict)
    #: True when a cauce driver started this process
    managed: bool = False

    @property
    def is_chief(self) -> bool:
        """Rank 0 of the world (or the chief role's task), the one that writes shared files."""
        return self.rank == 0 or (self.rank < 0 and self.role == "chief")


def _int(env: Mapping[str, str], *names: str, default: int) -> int:
    for name in names:
        value = env.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                continue
    return default


def context(env: Mapping[str, str] | None = None) -> Context:
    """This task's identity, paths and trial parameters."""
    env = os.environ if env is None else env
    managed = "CAUCE_JOB_ID" in env
    run_dir = Path(env.get("CAUCE_RUN_DIR") or Path.cwd() / "cauce-run")
    params: dict[str, Any] = {}
    if env.get("CAUCE_PARAMS"):
        params = dict(json.loads(env["CAUCE_PARAMS"]))
    return Context(
        job_id=env.get("CAUCE_JOB_ID", "local"),
        job_name=env.get("CAUCE_JOB_NAME", "local"),
        task_id=env.get("CAUCE_TASK_ID", "worker-0"),
        role=env.get("CAUCE_ROLE", "worker"),
        index=_int(env, "CAUCE_ROLE_INDEX", default=0),
        rank=_int(env, "CAUCE_RANK", "RANK", default=0),
        world_size=_int(env, "CAUCE_WORLD_SIZE", "WORLD_SIZE", default=1),
        local_rank=_int(env, "LOCAL_RANK", default=0),
        attempt=_int(env, "CAUCE_ATTEMPT", "TORCHELASTIC_RESTART_COUNT", default=0),
        framework=env.get("CAUCE_FRAMEWORK", "none"),
        run_dir=run_dir,
        checkpoint_dir=Path(env.get("CAUCE_CHECKPOINT_DIR") or run_dir / "checkpoints"),
        artifact_dir=Path(env.get("CAUCE_ARTIFACT_DIR") or run_dir / "artifacts"),
        params=params,
        managed=managed,
    )
