"""The portal (`cauce ui`) in a real headless Chromium, over a history made by real runs
(``ui_fixtures``): click through jobs, a failed job's cause, log and charts, a study and its
comparison, a pipeline's lineage and its model; a job that runs while the page is open; what
users wrote stays text; no path outside the store; a token beyond loopback."""

from __future__ import annotations

import http.client
import json
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import cauce, cauce_popen, write_job
from ui_fixtures import XSS_NAME, Portal

pytestmark = pytest.mark.slow


def _get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A raw request: the path goes out as written (no client normalizes ``..`` away)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_click_through_jobs_study_pipeline_and_model(portal: Portal) -> None:
    page = portal.page
    page.goto(portal.url + "/")
    page.screenshot(path=str(portal.shots / "ui-jobs.png"))
    # Jobs list -> the failed job: its root cause on top.
    page.get_by_role("link", name="twofold").first.click()
    page.wait_for_url(f"**/jobs/{portal.failed_job}")
    cause = page.locator("#root-cause")
    assert "worker-1 failed first (exit 3" in cause.inner_text()
    # The failing task's log shows its last line.
    log = page.locator("section.log", has_text="worker-1").locator("pre.logtail")
    assert log.inner_text().rstrip().endswith("rank 1 gives up: the last line")
    # One chart per metric, a series per task, a point per report, as the store has them.
    status, body = _get(portal.url, f"/jobs/{portal.failed_job}/metrics.csv")
    assert status == 200
    reports = Counter(line.split(",")[0] for line in body.decode().splitlines()[1:])
    assert reports["worker-1"] == 6, reports  # it reported 6 steps before it failed
    chart = page.locator('figure[data-metric="loss"] svg')
    chart.wait_for()
    drawn = {
        s.get_attribute("data-name"): s.locator("circle").count()
        for s in chart.locator("g.series").all()
    }
    assert drawn == dict(reports)
    page.screenshot(path=str(portal.shots / "ui-job.png"), full_page=False)
    # The whole log is streamed on demand.
    status, body = _get(portal.url, f"/jobs/{portal.failed_job}/logs/worker-1/0")
    assert status == 200 and body.decode().rstrip().endswith("the last line")

    # The study: trials with pruned ones, the charts drawn, two trials compared.
    page.get_by_role("link", name="Studies").click()
    page.get_by_role("link", name="curves").click()
    page.wait_for_url("**/studies/curves")
    states = page.locator("table.trials span.st").all_inner_texts()
    assert len(states) == 6 and "pruned" in states, states
    assert page.locator("#best-chart svg circle").count() == states.count("complete") * 2
    page.locator("#parallel-chart svg").wait_for()
    boxes = page.locator("input.cmp")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.locator("#compare").click()
    compared = page.locator("#compare-chart svg g.series")
    compared.first.wait_for()
    assert compared.count() == 2
    assert compared.first.locator("circle").count() == 8  # trial 0 reported 8 steps
    page.screenshot(path=str(portal.shots / "ui-study.png"), full_page=True)

    # The pipeline: its steps and the lineage from the model back to the dataset.
    page.get_by_role("link", name="Pipelines").click()
    page.get_by_role("link", name="small").click()
    steps = page.locator("table.steps tbody tr")
    assert steps.count() == 5
    # The second run found every step up to date (preparation asks its own cache).
    assert page.locator("table.steps td:nth-child(4)").all_inner_texts() == ["hit"] * 5
    assert page.locator("svg.lineage g.node").count() == 6  # 5 steps and the model
    dataset = page.locator('svg.lineage g[data-node="prepare"]').text_content() or ""
    assert "hash " in dataset and "train 30" in dataset and "test 10" in dataset
    page.screenshot(path=str(portal.shots / "ui-pipeline.png"))
    page.locator('svg.lineage g[data-node="model:model/model"]').click()
    page.wait_for_url("**/pipelines/small/models/model/model")
    assert page.locator("#serve-command").inner_text().startswith("cauce serve /")
    assert "rows" in page.locator("table").first.inner_text()  # the signature
    # The model's lineage: back through its job to the study's best trial, train's job and
    # the dataset.
    nodes = page.locator("svg.lineage g.node")
    assert sorted(nodes.evaluate_all("ns => ns.map(n => n.dataset.node)")) == [
        "model",
        "model:model/model",
        "prepare",
        "search",
        "train",
    ]
    assert "best trial " in (page.locator('g[data-node="search"]').text_content() or "")
    page.get_by_role("link", name="train: job").click()
    page.wait_for_url("**/jobs/count-*")

    # The CLI points at the running portal.
    shown = cauce(["show", portal.failed_job], portal.env)
    assert f"portal:    {portal.url}/jobs/{portal.failed_job}" in shown.stdout, shown.stdout
    listed = cauce(["trials", "curves"], portal.env)
    assert f"portal:    {portal.url}/studies/curves" in listed.stdout, listed.stdout


def _waiting_job(folder: Path, name: str) -> Path:
    """A job that prints ``started``, waits until a file ``go`` is in its folder (120 s at
    most), then prints ``the end``."""
    (folder / "wait.py").write_text(
        "import os, time\nprint('started', flush=True)\nend = time.monotonic() + 120\n"
        "while not os.path.exists('go') and time.monotonic() < end:\n    time.sleep(0.05)\n"
        "print('the end')\n"
    )
    return write_job(
        folder,
        f"""
        name: {name}
        framework: none
        command: {sys.executable} wait.py
        roles: {{worker: {{resources: {{cpus: 0.5}}}}}}
        """,
    )


def test_a_running_job_changes_status_and_its_log_follows_without_a_reload(
    portal: Portal, tmp_path: Path
) -> None:
    page = portal.page
    # The job runs until the test has seen it running on its page (a fixed few seconds could
    # be over before a busy host's browser got there), 120 s at most.
    job = _waiting_job(tmp_path, "live")
    page.goto(portal.url + "/jobs?q=live")
    page.evaluate("window.__same = 1")
    run = cauce_popen(["run", str(job)], portal.env, cwd=tmp_path)
    try:
        # The list: the new job's row appears, running, without a reload.
        row = page.locator("#jobs tr", has_text="live")
        row.locator("[data-status=running]").wait_for(timeout=30_000)
        assert page.evaluate("window.__same") == 1
        # Its page: the log follows to its last line and the status changes, in place.
        row.get_by_role("link", name="live").click()
        page.locator("#job-status [data-status=running]").wait_for()
        page.evaluate("window.__same = 2")
        (tmp_path / "go").touch()
        page.locator("pre.logtail", has_text="the end").wait_for(timeout=30_000)
        page.locator("#job-status [data-status=succeeded]").wait_for(timeout=30_000)
        assert page.evaluate("window.__same") == 2  # the same page: no reload
    finally:
        run.communicate(timeout=60)
    assert run.returncode == 0


def test_a_job_whose_driver_is_killed_shows_lost_in_place(portal: Portal, tmp_path: Path) -> None:
    """``kill -9`` of ``cauce run``: the job's page and the jobs list say lost, with the cause,
    without a reload (they said running until someone ran ``cauce jobs``)."""
    page = portal.page
    job = _waiting_job(tmp_path, "doomed")
    run = cauce_popen(["run", str(job)], portal.env, cwd=tmp_path)
    try:
        page.goto(portal.url + "/jobs?q=doomed")
        row = page.locator("#jobs tr", has_text="doomed")
        row.locator("[data-status=running]").wait_for(timeout=30_000)
        row.get_by_role("link", name="doomed").click()
        page.locator("#job-status [data-status=running]").wait_for()
        page.evaluate("window.__same = 3")
        run.kill()
        run.communicate(timeout=30)
        page.locator("#job-status [data-status=lost]").wait_for(timeout=30_000)
        assert page.evaluate("window.__same") == 3  # the same page: no reload
        assert "died without finishing the job" in page.content()
        page.goto(portal.url + "/jobs?q=doomed")
        row.locator("[data-status=lost]").wait_for(timeout=10_000)
    finally:
        (tmp_path / "go").touch()  # the task ends even if the driver's reaper did not stop it
        if run.poll() is None:
            run.kill()
            run.communicate(timeout=30)


def test_what_users_wrote_is_text_and_paths_stay_in_the_store(portal: Portal) -> None:
    page = portal.page
    page.goto(portal.url + "/jobs/xss-1")
    assert page.locator("h1").inner_text() == f"Job {XSS_NAME}"
    assert page.evaluate("window.__xss") is None
    page.goto(portal.url + "/jobs")
    assert XSS_NAME in page.locator("#jobs").inner_text()
    assert page.evaluate("window.__xss") is None
    job = portal.failed_job
    for path in (
        "/jobs/../../../etc/passwd",
        f"/jobs/{job}/logs/..%2F..%2F..%2Fetc%2Fpasswd/0",
        f"/jobs/{job}/logs/worker-1/..",
        "/static/../_app.py",
        "/static/..%2F_app.py",
        "/pipelines/..%2F..%2Fhistory.db",
        "/pipelines/small/models/model/..%2F..%2F..",
    ):
        status, body = _get(portal.url, path)
        assert status == 404, (path, status)
        assert b"root:" not in body and b"import" not in body
    status, body = _get(portal.url, f"/api/jobs/{job}")
    assert status == 200 and json.loads(body)["status"] == "failed"


def test_beyond_loopback_a_token_is_required(portal: Portal, tmp_path: Path) -> None:
    refused = cauce(["ui", "--host", "0.0.0.0", "--port", "0"], portal.env, timeout=30)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: --host 0.0.0.0 would show the history")
    assert "--token" in refused.stderr and "Traceback" not in refused.stderr

    env = {**portal.env, "CAUCE_UI_TOKEN": "s3cret-token"}
    server = cauce_popen(["ui", "--host", "0.0.0.0", "--port", "0"], env)
    try:
        assert server.stdout is not None
        port = server.stdout.readline().rsplit(":", 1)[1].split()[0]
        url = f"http://127.0.0.1:{port}"
        assert _get(url, "/jobs")[0] == 401
        assert _get(url, "/api/jobs")[0] == 401
        assert _get(url, "/jobs", {"Authorization": "Bearer s3cret-tokem"})[0] == 401
        assert _get(url, "/jobs", {"Authorization": "Bearer s3cret-token"})[0] == 200
        # The login form sets a cookie that opens the pages.
        context = portal.page.context.browser.new_context()
        try:
            page = context.new_page()
            page.goto(url + "/studies")
            page.fill("input[name=token]", "s3cret-token")
            with page.expect_navigation():
                page.get_by_role("button", name="sign in").click()
            assert page.url.endswith("/studies")
            assert page.locator("h1").inner_text() == "Studies"
        finally:
            context.close()
        started = time.monotonic()
        assert _get(url, "/jobs", {"Cookie": "cauce_ui_token=nope"})[0] == 401
        assert time.monotonic() - started < 30
    finally:
        server.terminate()
        server.communicate(timeout=15)
