"""The studies list and a study's page: trials (a page at a time), best value over time,
intermediate values, parallel coordinates, and 2 to 4 trials compared on one chart."""

from __future__ import annotations

import time

from sqlalchemy.engine import Engine

from cauce.ui._html import (
    e,
    fmt_seconds,
    fmt_value,
    json_script,
    link,
    page,
    pager,
    q,
    status_badge,
    table,
)
from cauce.ui._http import Request, Response, html_response, json_response, not_found, parse_int
from cauce.ui._studies import (
    StudyRow,
    best_over_time,
    curves,
    find_study,
    list_studies,
    param_rows,
    trials_page,
)

__all__ = ["studies_list", "study_curves", "study_page"]

TRIALS_PER_PAGE = 50


def _counts(study: StudyRow) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(study.counts.items())) or "no trials"


def studies_list(engine: Engine, req: Request) -> Response:
    rows = [
        [
            link(f"/studies/{q(s.name)}", s.name),
            e(f"{s.direction} {s.metric}"),
            e(s.job),
            e(_counts(s)),
        ]
        for s in list_studies(engine)
    ]
    body = table(("study", "objective", "job", "trials"), rows) if rows else "<p>no studies</p>"
    return html_response(page("Studies", body))


def _study(engine: Engine, name: str) -> StudyRow:
    study = find_study(engine, name)
    if study is None:
        raise not_found(f"no study {name}")
    return study


def _params(params: dict[str, object]) -> str:
    return " ".join(f"{k}={fmt_value(v)}" for k, v in params.items())


def study_page(engine: Engine, req: Request, name: str) -> Response:
    study = _study(engine, name)
    total = sum(study.counts.values())
    pages = max(1, -(-total // TRIALS_PER_PAGE))
    number = min(max(1, req.int_arg("page", 1)), pages)
    now = time.time()
    rows = []
    for t in trials_page(engine, study, number, TRIALS_PER_PAGE):
        took = None if t.started is None else (t.ended or now) - t.started
        job = link(f"/jobs/{q(t.job_id)}", t.job_id) if t.job_id else "-"
        rows.append(
            [
                f'<label><input type="checkbox" class="cmp" value="{t.number}"> {t.number}</label>',
                status_badge(t.state),
                e(fmt_value(t.value)),
                e("-" if t.pruned_step is None else t.pruned_step),
                e(fmt_seconds(took)),
                e(_params(t.params)),
                job,
            ]
        )
    goal = "minimize" if study.direction == "min" else "maximize"
    best = best_over_time(engine, study)
    body = (
        f"<p>{e(goal)} <b>{e(study.metric)}</b> of job {e(study.job)}: {e(_counts(study))}</p>"
        '<div class="charts">'
        '<figure class="chart" id="best-chart"><figcaption>best value over trials</figcaption>'
        "</figure>"
        '<figure class="chart" id="curves-chart"><figcaption>intermediate values (what the '
        "pruner saw)</figcaption></figure>"
        '<figure class="chart wide" id="parallel-chart"><figcaption>parallel coordinates '
        "(complete trials; darker is better)</figcaption></figure>"
        "</div>"
        '<h2>Compare trials</h2><p>Tick 2 to 4 trials below. <button id="compare" disabled>'
        'compare</button></p><figure class="chart wide" id="compare-chart" hidden>'
        "<figcaption>intermediate values of the trials compared</figcaption></figure>"
        "<h2>Trials</h2>"
        + table(
            ("trial", "state", study.metric, "pruned at", "duration", "params", "job"),
            rows,
            cls="trials",
        )
        + pager(f"/studies/{q(study.name)}", {}, number, pages)
        + json_script(
            "study-data",
            {
                "name": study.name,
                "direction": study.direction,
                "best": best,
                "curves": f"/api/studies/{q(study.name)}/curves",
                "parallel": f"/api/studies/{q(study.name)}/params",
            },
        )
    )
    return html_response(page(f"Study {study.name}", body, script="study"))


def study_curves(engine: Engine, req: Request, name: str) -> Response:
    study = _study(engine, name)
    raw = req.arg("trials")
    numbers = None
    if raw:
        numbers = [parse_int(n.strip(), "trials") for n in raw.split(",")[:4]]
    found = curves(engine, study, numbers)
    return json_response([{"name": f"trial {n}", "points": pts} for n, pts in found.items()])


def study_params(engine: Engine, req: Request, name: str) -> Response:
    return json_response(param_rows(engine, _study(engine, name)))
