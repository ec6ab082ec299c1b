"""What a process may use of its machine (``cauce._util.machine``): the CPU quota and memory
limit of its cgroups, v2 and v1, read from the files the kernel shows; and, as root where the
kernel lets a test make cgroups, the same limits seen from inside a real one, by ``cauce run``
(a job that does not fit is refused, naming the limit) and by the warm-up's spare-core
reading."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from cauce._util.machine import available_cpus, cgroup_limits, total_memory
from helpers import write_job

GIB = 1 << 30


def _fake_proc(tmp_path: Path, mountinfo: Sequence[str], cgroup: Sequence[str]) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text("\n".join(mountinfo) + "\n")
    (proc / "self" / "cgroup").write_text("\n".join(cgroup) + "\n")
    return proc


def _write(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("__", ".")).write_text(text + "\n")


def test_cgroup_v2_limits_are_the_smallest_on_the_path_to_the_root(tmp_path: Path) -> None:
    mount = tmp_path / "cg2"
    proc = _fake_proc(
        tmp_path,
        [
            "25 1 0:22 / /proc rw - proc proc rw",
            f"30 23 0:26 / {mount} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate",
        ],
        ["0::/kubepods/pod1/box"],
    )
    _write(mount, memory__max="max", cpu__max="max 100000")
    _write(mount / "kubepods", memory__max=str(8 * GIB))
    _write(mount / "kubepods" / "pod1", cpu__max="250000 100000", memory__max=str(3 * GIB))
    _write(mount / "kubepods" / "pod1" / "box", cpu__max="max 100000", memory__max="max")
    limits = cgroup_limits(proc)
    assert limits.cpus == 2.5
    assert limits.memory == 3 * GIB
    # the quota's own cgroup counts the CPU time that the quota bounds
    assert limits.usage == mount / "kubepods" / "pod1" / "cpu.stat"
    assert available_cpus(limits) == min(2.5, len(os.sched_getaffinity(0)))
    assert total_memory(limits) == 3 * GIB


def test_cgroup_v1_limits_with_cpu_and_cpuacct_mounted_together(tmp_path: Path) -> None:
    cpu, memory = tmp_path / "cpu,cpuacct", tmp_path / "memory"
    proc = _fake_proc(
        tmp_path,
        [
            f"32 31 0:29 / {cpu} rw,relatime - cgroup cgroup rw,cpu,cpuacct",
            f"35 31 0:32 / {memory} rw,relatime - cgroup cgroup rw,memory",
            f"40 31 0:37 / {tmp_path / 'systemd'} rw - cgroup cgroup rw,name=systemd",
        ],
        ["9:name=systemd:/", "4:memory:/yarn/container_1", "2:cpu,cpuacct:/yarn/container_1"],
    )
    _write(cpu, cpu__cfs_quota_us="-1", cpu__cfs_period_us="100000")
    _write(cpu / "yarn", cpu__cfs_quota_us="-1", cpu__cfs_period_us="100000")
    _write(
        cpu / "yarn" / "container_1",
        cpu__cfs_quota_us="50000",
        cpu__cfs_period_us="100000",
        cpuacct__usage="123000000000",
    )
    _write(memory, memory__limit_in_bytes="9223372036854771712")  # no limit
    _write(memory / "yarn", memory__limit_in_bytes="9223372036854771712")
    _write(memory / "yarn" / "container_1", memory__limit_in_bytes=str(2 * GIB))
    limits = cgroup_limits(proc)
    assert (limits.cpus, limits.memory) == (0.5, 2 * GIB)
    assert limits.usage == cpu / "yarn" / "container_1" / "cpuacct.usage"


def test_no_limits_leave_the_hosts_figures(tmp_path: Path) -> None:
    mount = tmp_path / "cg2"
    proc = _fake_proc(
        tmp_path, [f"30 23 0:26 / {mount} rw - cgroup2 cgroup2 rw"], ["0::/user.slice"]
    )
    _write(mount / "user.slice", cpu__max="max 100000", memory__max="max")
    assert cgroup_limits(proc).cpus is None and cgroup_limits(proc).memory is None
    # A cgroup that is not below what the mount shows, and a /proc without the files: nothing.
    elsewhere = _fake_proc(
        tmp_path / "b", [f"30 23 0:26 /other {mount} rw - cgroup2 cgroup2 rw"], ["0::/user.slice"]
    )
    assert cgroup_limits(elsewhere).cpus is None
    assert cgroup_limits(tmp_path / "no-proc").memory is None
    limits = cgroup_limits(proc)
    assert available_cpus(limits) == len(os.sched_getaffinity(0))
    assert total_memory(limits) > 0


# --- in a real cgroup ---------------------------------------------------------------------------


def _cgroup_mounts() -> dict[str, Path]:
    """Where this host mounts the v1 hierarchies of cpu, cpuacct and memory, or the v2 one
    (key ``v2``)."""
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        head, _, tail = line.partition(" - ")
        kind, _, options = tail.split()[:3] if len(tail.split()) >= 3 else ("", "", "")
        point = Path(head.split()[4])
        if kind == "cgroup":
            for controller in ("cpu", "cpuacct", "memory"):
                if controller in options.split(","):
                    found[controller] = point
        elif kind == "cgroup2":
            found.setdefault("v2", point)
    return found


@contextlib.contextmanager
def limited(cpus: float, memory: int) -> Iterator[list[str]]:
    """A command prefix that runs a command in a new cgroup with these limits, as root; skips
    where the kernel does not let this test make one. Removed on the way out, with any process
    still in it killed."""
    if os.geteuid() != 0:
        pytest.skip("making a cgroup needs root")
    mounts = _cgroup_mounts()
    name = f"cauce-test-{uuid.uuid4().hex[:8]}"
    folders: list[Path] = []
    v2 = mounts.get("v2")
    try:
        controllers = (v2 / "cgroup.subtree_control").read_text().split() if v2 else []
        if v2 is not None and {"cpu", "memory"} <= set(controllers):
            folder = v2 / name
            folder.mkdir()
            folders.append(folder)
            (folder / "cpu.max").write_text(f"{int(cpus * 100000)} 100000")
            (folder / "memory.max").write_text(str(memory))
        elif {"cpu", "cpuacct", "memory"} <= set(mounts):
            for point in {mounts["cpu"], mounts["cpuacct"], mounts["memory"]}:
                (point / name).mkdir()
                folders.append(point / name)
            (mounts["cpu"] / name / "cpu.cfs_period_us").write_text("100000")
            (mounts["cpu"] / name / "cpu.cfs_quota_us").write_text(str(int(cpus * 100000)))
            (mounts["memory"] / name / "memory.limit_in_bytes").write_text(str(memory))
        else:
            pytest.skip("no cgroup hierarchy with cpu and memory controllers to make one in")
    except OSError as exc:
        _remove(folders)
        pytest.skip(f"cannot make a cgroup here: {exc}")
    procs = [str(f / "cgroup.procs") for f in folders]
    enter = (
        "import os, sys\n"
        f"for path in {procs!r}:\n"
        "    with open(path, 'w') as f: f.write(str(os.getpid()))\n"
        "os.execvp(sys.argv[1], sys.argv[1:])\n"
    )
    try:
        yield [sys.executable, "-c", enter]
    finally:
        _remove(folders)


def _remove(folders: list[Path]) -> None:
    deadline = time.monotonic() + 15
    for folder in folders:
        while folder.exists():
            with contextlib.suppress(OSError, ValueError):
                for pid in (folder / "cgroup.procs").read_text().split():
                    os.kill(int(pid), 9)
            try:
                folder.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _run(
    prefix: list[str], argv: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, *argv], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_job_that_does_not_fit_a_cgroups_limits_is_refused_naming_them(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """In a cgroup of 1.5 CPUs and 3 GiB, on a host with more of both: a job asking 2 CPUs and
    4 GiB can never fit, and the refusal says the figures are the cgroup's."""
    job = write_job(
        tmp_path,
        "command: 'true'\nroles: {worker: {instances: 2, resources: {cpus: 1, memory: 2GiB}}}\n",
    )
    with limited(1.5, 3 * GIB) as prefix:
        done = _run(prefix, [sys.executable, "-m", "cauce", "run", str(job)], cauce_env)
        probe = _run(
            prefix,
            [
                sys.executable,
                "-c",
                "import time; from cauce._util.machine import cpu_sample, spare_cores\n"
                "a = cpu_sample(); time.sleep(1.5); b = cpu_sample()\n"
                "print(b.quota, round(spare_cores(a, b), 2))",
            ],
            cauce_env,
        )
    assert done.returncode == 2, done.stderr
    assert "needs 2 CPUs, this host has 1.5 (its cgroup's CPU quota)" in done.stderr
    assert "needs 4.0 GiB of memory, this host has 3.0 GiB (its cgroup's memory limit)" in (
        done.stderr
    )
    # The warm-up's reading: an idle process under a quota of 1.5 CPUs has at most 1.5 spare.
    quota, spare = probe.stdout.split()
    assert float(quota) == 1.5, probe.stderr
    assert 0.0 <= float(spare) <= 1.5
