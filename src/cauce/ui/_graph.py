"""The lineage of a pipeline as a small graph, drawn on the server as SVG (no script needed):
datasets, studies and trials, jobs and models, from left to right in the order they feed
each other, each box a link to its page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cauce.ui._html import e, q
from cauce.ui._pipelines import Pipeline, Step

__all__ = ["Node", "lineage_nodes", "lineage_svg"]

_W, _H, _GAP_X, _GAP_Y = 230, 58, 50, 18


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # dataset | study | job | model | step
    lines: tuple[str, ...]
    href: str
    parents: tuple[str, ...]


def _short(text: object, n: int = 12) -> str:
    return str(text or "")[:n]


def _step_node(pipeline: Pipeline, step: Step) -> Node:
    r = step.result
    parents = tuple(n for n in step.needs if pipeline.step(n) is not None)
    found = r.get("outputs")
    outputs: dict[str, Any] = found if isinstance(found, dict) else {}
    if "content_hash" in outputs:
        rows = outputs.get("rows")
        split = ", ".join(f"{k} {v}" for k, v in rows.items()) if isinstance(rows, dict) else ""
        return Node(
            step.name,
            "dataset",
            (f"{step.name}: dataset", f"hash {_short(outputs['content_hash'])}", f"rows {split}"),
            "",
            parents,
        )
    if "study" in r and isinstance(r.get("best"), dict):
        best = r["best"]
        return Node(
            step.name,
            "study",
            (
                f"{step.name}: study {r['study']}",
                f"best trial {best.get('trial')}",
                f"{best.get('metric')} {best.get('value')}",
            ),
            f"/studies/{q(r['study'])}",
            parents,
        )
    if "job_id" in r:
        code = (r.get("lineage") or {}).get("code_sha256", "")
        return Node(
            step.name,
            "job",
            (f"{step.name}: job", _short(r["job_id"], 28), f"code {_short(code) or '-'}"),
            f"/jobs/{q(r['job_id'])}",
            parents,
        )
    return Node(
        step.name, "step", (f"{step.name}: {step.kind or 'step'}", step.status), "", parents
    )


def lineage_nodes(pipeline: Pipeline, model_folder: str | None = None) -> list[Node]:
    """Every step and model of the pipeline; with ``model_folder``, that model and what it
    came from only."""
    nodes = {s.name: _step_node(pipeline, s) for s in pipeline.steps if s.result}
    for m in pipeline.models():
        key = f"model:{m.step}/{m.output}"
        nodes[key] = Node(
            key,
            "model",
            (f"model {m.spec.get('name', '')}", f"{m.step}.{m.output}"),
            f"/pipelines/{q(pipeline.name)}/models/{q(m.step)}/{q(m.output)}",
            (m.step,),
        )
    if model_folder is None:
        return list(nodes.values())
    start = [
        n
        for n in nodes.values()
        if n.kind == "model"
        and any(
            m.folder == model_folder and n.id == f"model:{m.step}/{m.output}"
            for m in pipeline.models()
        )
    ]
    keep: dict[str, Node] = {}
    todo = list(start)
    while todo:
        node = todo.pop()
        if node.id not in keep:
            keep[node.id] = node
            todo += [nodes[p] for p in node.parents if p in nodes]
    return [n for n in nodes.values() if n.id in keep]


def lineage_svg(nodes: list[Node]) -> str:
    depth: dict[str, int] = {}
    by_id = {n.id: n for n in nodes}

    def level(node: Node, seen: frozenset[str] = frozenset()) -> int:
        if node.id not in depth:
            ups = [by_id[p] for p in node.parents if p in by_id and p not in seen]
            depth[node.id] = 1 + max((level(u, seen | {node.id}) for u in ups), default=-1)
        return depth[node.id]

    columns: dict[int, list[Node]] = {}
    for node in nodes:
        columns.setdefault(level(node), []).append(node)
    where: dict[str, tuple[int, int]] = {}
    for col, members in columns.items():
        for row, node in enumerate(members):
            where[node.id] = (col * (_W + _GAP_X) + 4, row * (_H + _GAP_Y) + 4)
    width = (max(columns, default=0) + 1) * (_W + _GAP_X)
    height = max((len(m) for m in columns.values()), default=1) * (_H + _GAP_Y)
    parts = [
        f'<svg class="lineage" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
    ]
    for node in nodes:
        x, y = where[node.id]
        for p in node.parents:
            if p in where:
                px, py = where[p]
                parts.append(
                    f'<path class="edge" d="M{px + _W},{py + _H // 2} C{px + _W + 25},'
                    f'{py + _H // 2} {x - 25},{y + _H // 2} {x},{y + _H // 2}"/>'
                )
    for node in nodes:
        x, y = where[node.id]
        text = "".join(
            f'<text x="{x + 8}" y="{y + 17 + 16 * i}">{e(line[:34])}</text>'
            for i, line in enumerate(node.lines)
        )
        box = (
            f'<g class="node node-{e(node.kind)}" data-node="{e(node.id)}">'
            f'<rect x="{x}" y="{y}" width="{_W}" height="{_H}" rx="6"/>{text}</g>'
        )
        parts.append(f'<a href="{e(node.href)}">{box}</a>' if node.href else box)
    parts.append("</svg>")
    return "".join(parts)
