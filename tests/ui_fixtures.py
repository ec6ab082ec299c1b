"""A history made by real runs for the portal's tests (``test_ui.py``), one per session: a
failed 2-rank job, a study with pruned trials, the small test pipeline with a model step, and
a job whose name is a script tag; then ``cauce ui`` on it and one headless Chromium (Debian's
``chromium`` through Playwright, nothing downloaded)."""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import cauce, cauce_popen, stop, write_job
from pipeline_fixtures import write_small

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

FAIL = """
import os, sys, time
import cauce

rank = int(os.environ["RANK"])
for step in range(6):
    cauce.report(step, loss=1.0 / (step + 1) + rank)
print("rank", rank, "reported 6 steps")
if rank == 1:
    time.sleep(2)  # the driver collects rank 0's reports before the gang is stopped
    print("rank 1 gives up: the last line", flush=True)
    sys.exit(3)
time.sleep(30)
"""

CURVE = """
import time
import cauce

x = float(cauce.context().params["x"])
for step in range(8):
    cauce.report(step, loss=(x - 0.3) ** 2 + 1.0 / (step + 1))
    time.sleep(0.08)
"""

MODEL = """
import hashlib, json, os
import cauce

folder = cauce.context().run_dir / "model"
folder.mkdir(parents=True, exist_ok=True)
(folder / "model.pt").write_bytes(b"not really torchscript")
spec = {
    "format_version": 1, "name": "counter", "version": "1", "framework": "torchscript",
    "model_file": "model.pt", "sha256": hashlib.sha256(b"not really torchscript").hexdigest(),
    "inputs": [{"name": "rows", "datatype": "FP32", "shape": [-1, 1]}],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
}
(folder / "cauce-model.json").write_text(json.dumps(spec))
"""

#: The name of a job that tries to run a script in the page.
XSS_NAME = "<script>window.__xss=1</script>"


@dataclass
class Portal:
    url: str
    env: dict[str, str]
    home: Path
    failed_job: str
    page: Any  # playwright's Page
    shots: Path


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium: scripts/setup.sh installs it (apt-get install chromium)")
    return path


def build_history(folder: Path, env: dict[str, str]) -> tuple[str, Path]:
    """Runs the jobs, the study and the pipeline; returns the failed job's id and the
    pipeline's file."""
    jobs = folder / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "fail.py").write_text(FAIL)
    (jobs / "curve.py").write_text(CURVE)
    write_job(
        jobs,
        """
        name: twofold
        framework: pytorch
        command: python fail.py
        roles: {worker: {instances: 2, resources: {cpus: 0.5}}}
        """,
        name="fail.yaml",
    )
    write_job(
        jobs,
        """
        name: curves
        framework: none
        command: python curve.py
        roles: {worker: {resources: {cpus: 0.5}}}
        tune:
          objective: {metric: loss, direction: min}
          space:
            x: {type: uniform, low: 0.0, high: 1.0}
            opt: {type: choice, values: [sgd, adam]}
          trials: 6
          parallel: 2
          sampler: {type: random, seed: 3}
          pruner: {type: median, startup_trials: 2, warmup_steps: 1}
        """,
        name="study.yaml",
    )
    failed = cauce(["run", str(jobs / "fail.yaml")], env)
    assert failed.returncode != 0, failed.stderr
    found = re.search(r"job (twofold-\S+) failed", failed.stderr)
    assert found, failed.stderr
    study = cauce(["tune", str(jobs / "study.yaml")], env)
    assert study.returncode == 0, study.stdout + study.stderr

    pipe = folder / "pipe"
    pipeline = write_small(pipe)
    (pipe / "model.py").write_text(MODEL)
    write_job(
        pipe,
        """
        name: modeler
        framework: none
        command: python model.py
        roles: {worker: {resources: {cpus: 0.5}}}
        """,
        name="model.yaml",
    )
    write_job(
        pipe,
        """
        name: search
        framework: none
        command: python count.py
        roles: {worker: {resources: {cpus: 0.5}}}
        tune:
          objective: {metric: rows, direction: max}
          space: {x: {type: uniform, low: 0.0, high: 1.0}}
          trials: 2
          parallel: 2
          sampler: {type: random, seed: 1}
        """,
        name="search.yaml",
    )
    text = pipeline.read_text() + textwrap.indent(
        textwrap.dedent(
            """
            search:
              kind: tune
              job: search.yaml
              args: [train]
              env:
                DATA: ${steps.prepare.outputs.dataset}
            model:
              kind: run
              job: model.yaml
              params:
                rows: ${steps.train.json.result.rows}
                trial: ${steps.search.best.trial}
              env:
                DATA: ${steps.prepare.outputs.dataset}
              outputs: {model: model}
            """
        ),
        "  ",
    )
    pipeline.write_text(text)
    ran = cauce(["run", str(pipeline)], env)
    assert ran.returncode == 0, ran.stderr

    from cauce.history import HistoryStore

    store = HistoryStore(f"sqlite:///{env['CAUCE_HOME']}/history.db")
    try:
        old = 1.0e9  # 2001: last in the list, out of the screenshots' way
        store.create_job(
            id="xss-1",
            name=XSS_NAME,
            status="succeeded",
            created_at=old,
            started_at=old + 1,
            ended_at=old + 3,
        )
    finally:
        store.close()
    return found.group(1), pipeline


@dataclass(frozen=True)
class _Served:
    url: str
    env: dict[str, str]
    home: Path
    failed_job: str
    shots: Path


@pytest.fixture(scope="session")
def portal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Served]:
    """The history and `cauce ui` serving it, built once per worker (not without a browser)."""
    pytest.importorskip("playwright.sync_api")
    _chromium()
    folder = tmp_path_factory.mktemp("ui")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
    env.update(CAUCE_HOME=str(folder / "home"), PYTHONUNBUFFERED="1")
    env["CAUCE_LEASE_DIR"] = str(folder / "leases")
    failed, pipeline = build_history(folder, env)
    server = cauce_popen(["ui", "--port", "0"], env)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert found, line + (server.stderr.read() if server.stderr else "")
        # Again, with the portal up: every step is a cache hit, and the summary links the page.
        again = cauce(["run", str(pipeline)], env)
        assert again.returncode == 0, again.stderr
        assert f"  portal:    {found.group(1)}/pipelines/small\n" in again.stdout, again.stdout
        shots = Path(__file__).parent.parent / "docs" / "images"
        if os.environ.get("CAUCE_UPDATE_SCREENSHOTS") != "1":
            shots = folder / "screenshots"
            shots.mkdir()
        yield _Served(found.group(1), env, folder / "home", failed, shots)
    finally:
        stop(server)


@pytest.fixture(scope="module")
def portal(portal_server: _Served) -> Iterator[Portal]:
    """A browser on the portal, for one test module only: Playwright's sync API keeps an event
    loop running in this thread while it is open, so ``asyncio.run`` in any other test the
    worker runs meanwhile would fail ("cannot be called from a running event loop")."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = _chromium()
    with sync_api.sync_playwright() as play:
        browser = play.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        page.set_default_timeout(60_000)  # a page on a busy host
        try:
            s = portal_server
            yield Portal(s.url, s.env, s.home, s.failed_job, page, s.shots)
        finally:
            browser.close()
