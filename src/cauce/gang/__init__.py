"""One distributed job: placement, env contract, supervision, restarts."""

from cauce.gang._driver import Console, JobDriver, JobResult, PrintConsole, new_job_id
from cauce.gang._machine import GangMachine, Phase

__all__ = [
    "Console",
    "GangMachine",
    "JobDriver",
    "JobResult",
    "Phase",
    "PrintConsole",
    "new_job_id",
]
