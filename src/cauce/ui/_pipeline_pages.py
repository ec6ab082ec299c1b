"""The pipelines list, a pipeline's page (steps, cache hits, lineage graph) and a model's page
(folder, signature, lineage, evaluation results, the ``cauce serve`` command)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from cauce.ui._graph import lineage_nodes, lineage_svg
from cauce.ui._html import e, fmt_seconds, fmt_time, link, page, q, status_badge, table
from cauce.ui._http import Request, Response, html_response, not_found, to_json
from cauce.ui._pipelines import Pipeline, find_pipeline, list_pipelines

__all__ = ["model_page", "pipeline_page", "pipelines_list"]


def pipelines_list(home: Path, req: Request) -> Response:
    names = list_pipelines(home)
    rows = [[link(f"/pipelines/{q(n)}", n)] for n in names]
    body = table(("pipeline",), rows) if rows else "<p>no pipelines have run</p>"
    return html_response(page("Pipelines", body))


def _pipeline(home: Path, name: str) -> Pipeline:
    found = find_pipeline(home, name)
    if found is None:
        raise not_found(f"no pipeline {name}")
    return found


def _produced(pipeline: Pipeline, result: dict[str, Any]) -> str:
    parts = []
    if result.get("job_id"):
        parts.append(link(f"/jobs/{q(result['job_id'])}", f"job {result['job_id']}"))
    if result.get("study"):
        parts.append(link(f"/studies/{q(result['study'])}", f"study {result['study']}"))
    outputs = result.get("outputs")
    if isinstance(outputs, dict):
        parts += [e(f"{k}: {v}") for k, v in outputs.items() if k not in ("rows", "files")]
    return "<br>".join(parts) or "-"


def pipeline_page(home: Path, req: Request, name: str) -> Response:
    pipeline = _pipeline(home, name)
    rows = []
    for s in pipeline.steps:
        cache = {"skipped": "hit", "ran": "miss"}.get(s.status, "-")
        rows.append(
            [
                e(s.name),
                e(s.kind),
                status_badge(s.status),
                e(cache),
                e(fmt_seconds(s.seconds)),
                e(fmt_time(s.finished_at)),
                _produced(pipeline, s.result),
            ]
        )
    models = pipeline.models()
    model_links = "".join(
        "<li>"
        + link(
            f"/pipelines/{q(name)}/models/{q(m.step)}/{q(m.output)}",
            f"{m.spec.get('name', m.output)} ({m.step}.{m.output})",
        )
        + "</li>"
        for m in models
    )
    body = (
        f"<p>file {e(pipeline.file or '-')}; last run {e(fmt_time(pipeline.finished_at))}</p>"
        + table(
            ("step", "kind", "last run", "cache", "took", "computed at", "produced"),
            rows,
            cls="steps",
        )
        + "<h2>Lineage</h2>"
        + lineage_svg(lineage_nodes(pipeline))
        + (f"<h2>Models</h2><ul>{model_links}</ul>" if models else "")
    )
    return html_response(page(f"Pipeline {name}", body))


def _signature(spec: dict[str, Any]) -> str:
    rows = []
    for way in ("inputs", "outputs"):
        for t in spec.get(way) or []:
            if isinstance(t, dict):
                shape = "x".join(str(d) for d in t.get("shape", []))
                rows.append([e(way[:-1]), e(t.get("name")), e(t.get("datatype")), e(shape)])
    return table(("", "tensor", "type", "shape"), rows)


def model_page(home: Path, req: Request, name: str, step: str, output: str) -> Response:
    pipeline = _pipeline(home, name)
    model = next((m for m in pipeline.models() if (m.step, m.output) == (step, output)), None)
    if model is None:
        raise not_found(f"no model {step}.{output} in pipeline {name}")
    spec = model.spec
    evaluations = pipeline.evaluations(model.folder)
    eval_rows = [
        [
            e(s),
            e(r.get("split")),
            e(
                ", ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in (r.get("metrics") or {}).items()
                )
            ),
        ]
        for s, r in evaluations
    ]
    command = f"cauce serve {shlex.quote(model.folder)}"
    lineage = to_json(spec.get("lineage", {}), indent=2, sort_keys=True)
    body = (
        "<dl class=facts>"
        f"<dt>folder</dt><dd>{e(model.folder)}</dd>"
        f"<dt>version</dt><dd>{e(spec.get('version', '-'))}</dd>"
        f"<dt>framework</dt><dd>{e(spec.get('framework', '-'))}</dd>"
        f"<dt>created</dt><dd>{e(spec.get('created_at', '-'))}</dd>"
        f"<dt>pipeline</dt><dd>{link(f'/pipelines/{q(name)}', name)} step {e(step)}</dd>"
        "</dl>"
        f'<h2>Serve it</h2><pre class="command" id="serve-command">{e(command)}</pre>'
        "<h2>Signature</h2>"
        + _signature(spec)
        + "<h2>Lineage</h2>"
        + lineage_svg(lineage_nodes(pipeline, model.folder))
        + f"<details><summary>as recorded</summary><pre>{e(lineage)}</pre></details>"
        + "<h2>Evaluation</h2>"
        + (table(("step", "split", "metrics"), eval_rows) if eval_rows else "<p>not evaluated</p>")
    )
    return html_response(page(f"Model {spec.get('name', output)}", body))
