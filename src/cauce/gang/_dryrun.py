"""What ``cauce run --dry-run`` prints: each task's placement, ports, GPUs and environment."""

from __future__ import annotations

import shlex
import time
from typing import TYPE_CHECKING

from cauce._util.sizes import format_bytes
from cauce.cluster.api import SHELL_NOTE, GangRequest, Waiting
from cauce.gang._plan import AttemptPlan
from cauce.gang._preflight import preflight
from cauce.spec import JobSpec

if TYPE_CHECKING:
    from cauce.gang._driver import JobDriver

__all__ = ["JOB_ID_PLACEHOLDER", "plan_dry_run", "render_dry_run"]

#: What the plan shows where the job id goes: a dry run starts no job, so it has none.
JOB_ID_PLACEHOLDER = "<job-id>"


def render_dry_run(
    spec: JobSpec,
    request: GangRequest,
    cluster: str,
    plan: AttemptPlan | None,
    waiting: str = "",
    *,
    note: str = SHELL_NOTE,
) -> str:
    """The resolved plan, or (``plan`` None) what the gang waits for; ``note`` goes under the
    plan (how firm the placement is, where the rest of the environment comes from)."""
    lines = [f"job {spec.name} ({spec.framework}): {len(request.tasks)} tasks on cluster {cluster}"]
    if plan is None:
        lines.append(f"waiting: {waiting} (the plan below is what it would get)")
        return "\n".join([*lines, "(no placement shown while waiting)"])
    for launch, slot in zip(plan.launches, plan.layout.slots, strict=True):
        res = request.tasks[plan.layout.slots.index(slot)].resources
        lines.append("")
        lines.append(
            f"{launch.task_id}: host {slot.host} port {slot.port} "
            f"gpus {','.join(slot.gpus) or '-'} cpus {res.cpus:g} "
            f"memory {format_bytes(res.memory) if res.memory else '-'}"
            f"{'' if slot.tracked else ' (untracked)'}"
        )
        lines.append(f"  command: {shlex.join(launch.argv)}")
        lines.append(f"  cwd: {launch.cwd}")
        lines.append(f"  log: {launch.log_path}")
        lines.append("  env:")
        shown = dict(plan.contract[launch.task_id])
        shown["PATH"] = launch.env.get("PATH", "")
        for key in sorted(shown):
            lines.append(f"    {key}={shown[key]}")
    lines.append("")
    lines.extend(note.splitlines())
    return "\n".join(lines)


def plan_dry_run(driver: JobDriver) -> str:
    """The resolved plan of ``driver``'s job: each task's placement, ports, GPUs and environment
    (the gang is reserved for a moment, then released)."""
    notes = preflight(driver.spec, driver.cluster, driver.request, driver.environ, dry_run=True)
    got = driver.cluster.try_reserve(driver.request)
    settle = time.monotonic() + driver.cluster.dry_run_wait
    while isinstance(got, Waiting) and time.monotonic() < settle:
        time.sleep(driver.poll_interval)
        got = driver.cluster.try_reserve(driver.request)
    if isinstance(got, Waiting):
        text = render_dry_run(driver.spec, driver.request, driver.cluster.name, None, got.reason)
    else:
        try:
            ports, note = got.preview()
            rendezvous = driver._horovod.preview() if driver._horovod is not None else None
            plan = driver._build(got, 0, rendezvous, ports)
        finally:
            got.release()
        text = render_dry_run(driver.spec, driver.request, driver.cluster.name, plan, note=note)
        # The id made for the plan will never name a job: say where the real one goes instead.
        text = (
            text.replace(driver.job_id, JOB_ID_PLACEHOLDER)
            + f"\n{JOB_ID_PLACEHOLDER}: the job's id, chosen when it runs (NAME-DATE-TIME-XXXX)"
        )
    return "\n".join([text, *notes])
