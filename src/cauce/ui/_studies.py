"""Studies, read straight from Optuna's tables in the history database with indexed queries:
one page of trials at a time, and the few columns each chart needs. Optuna itself is not
imported (loading every trial as a ``FrozenTrial`` is what makes big studies slow).
Parameters are turned to their external values from the distribution Optuna stored."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

__all__ = [
    "StudyRow",
    "TrialRow",
    "best_over_time",
    "curves",
    "find_study",
    "list_studies",
    "param_rows",
    "trials_page",
]

_STATES = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "queued",
}


@dataclass(frozen=True)
class StudyRow:
    id: int
    name: str
    direction: str  # min | max
    metric: str
    job: str
    counts: dict[str, int]


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    pruned_step: int | None
    started: float | None
    ended: float | None
    job_id: str | None


def _has_optuna(engine: Engine) -> bool:
    return "studies" in sa.inspect(engine).get_table_names()


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return float(when.timestamp())


def _attr(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw is not None else None
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _decoder(distribution_json: str) -> tuple[str, tuple[Any, ...]]:
    raw = json.loads(distribution_json)
    return str(raw.get("name", "")), tuple(raw.get("attributes", {}).get("choices", ()))


def _param(value: float, distribution_json: str) -> Any:
    kind, choices = _decoder(distribution_json)
    if kind == "CategoricalDistribution":
        return choices[int(value)] if 0 <= int(value) < len(choices) else value
    if kind.startswith("Int"):
        return int(value)
    return float(value)


def list_studies(engine: Engine) -> list[StudyRow]:
    if not _has_optuna(engine):
        return []
    with engine.connect() as conn:
        names = conn.execute(sa.text("SELECT study_id, study_name FROM studies ORDER BY study_id"))
        studies = list(names)
    return [s for s in (find_study(engine, name) for _, name in studies) if s is not None]


def find_study(engine: Engine, name: str) -> StudyRow | None:
    if not _has_optuna(engine):
        return None
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": name}
        ).first()
        if row is None:
            return None
        sid = int(row[0])
        attrs = {
            k: _attr(v)
            for k, v in conn.execute(
                sa.text("SELECT key, value_json FROM study_user_attributes WHERE study_id = :s"),
                {"s": sid},
            )
        }
        optuna_dir = conn.execute(
            sa.text("SELECT direction FROM study_directions WHERE study_id = :s"), {"s": sid}
        ).scalar()
        counts = {
            _STATES.get(str(state), str(state).lower()): int(n)
            for state, n in conn.execute(
                sa.text("SELECT state, count(*) FROM trials WHERE study_id = :s GROUP BY state"),
                {"s": sid},
            )
        }
    direction = attrs.get("cauce_direction") or ("max" if optuna_dir == "MAXIMIZE" else "min")
    return StudyRow(
        sid,
        name,
        str(direction),
        str(attrs.get("cauce_metric") or "value"),
        str(attrs.get("cauce_job") or ""),
        counts,
    )


def trials_page(engine: Engine, study: StudyRow, page: int, size: int) -> list[TrialRow]:
    """Trials by number, ``size`` of them from page ``page`` (from 1)."""
    with engine.connect() as conn:
        base = list(
            conn.execute(
                sa.text(
                    "SELECT trial_id, number, state, datetime_start, datetime_complete "
                    "FROM trials WHERE study_id = :s ORDER BY number LIMIT :l OFFSET :o"
                ),
                {"s": study.id, "l": size, "o": (page - 1) * size},
            )
        )
        ids = [int(r[0]) for r in base]
        params: dict[int, dict[str, Any]] = defaultdict(dict)
        values: dict[int, float] = {}
        last_step: dict[int, tuple[int, float]] = {}
        attrs: dict[int, dict[str, Any]] = defaultdict(dict)
        if ids:
            bind = {"ids": ids}
            expand: sa.BindParameter[Any] = sa.bindparam("ids", expanding=True)
            query = sa.text(
                "SELECT trial_id, param_name, param_value, distribution_json FROM trial_params "
                "WHERE trial_id IN :ids"
            ).bindparams(expand)
            for tid, pname, pvalue, dist in conn.execute(query, bind):
                params[tid][pname] = _param(pvalue, dist)
            query = sa.text(
                "SELECT trial_id, value FROM trial_values WHERE objective = 0 AND trial_id IN :ids"
            ).bindparams(expand)
            values = {tid: v for tid, v in conn.execute(query, bind)}
            query = sa.text(
                "SELECT trial_id, step, intermediate_value FROM trial_intermediate_values "
                "WHERE trial_id IN :ids ORDER BY trial_id, step"
            ).bindparams(expand)
            for tid, step, value in conn.execute(query, bind):
                last_step[tid] = (int(step), value)
            query = sa.text(
                "SELECT trial_id, key, value_json FROM trial_user_attributes "
                "WHERE key IN ('cauce_run', 'cauce_pruned_step') AND trial_id IN :ids"
            ).bindparams(expand)
            for tid, key, raw in conn.execute(query, bind):
                attrs[tid][key] = _attr(raw)
    out = []
    for tid, number, state, start, end in base:
        shown = _STATES.get(str(state), str(state).lower())
        value = values.get(tid)
        step = last_step.get(tid)
        if value is None and step is not None:
            value = step[1]
        pruned = None
        if shown == "pruned":
            pruned = attrs[tid].get("cauce_pruned_step", step[0] if step else None)
        run = attrs[tid].get("cauce_run")
        out.append(
            TrialRow(
                int(number),
                shown,
                params[tid],
                value,
                pruned,
                _ts(start),
                _ts(end),
                str(run["job_id"]) if isinstance(run, dict) and "job_id" in run else None,
            )
        )
    return out


def best_over_time(engine: Engine, study: StudyRow) -> list[list[float]]:
    """``[number, value, best so far]`` of each complete trial, by number."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT t.number, v.value FROM trials t JOIN trial_values v "
                "ON v.trial_id = t.trial_id AND v.objective = 0 "
                "WHERE t.study_id = :s AND t.state = 'COMPLETE' ORDER BY t.number"
            ),
            {"s": study.id},
        )
        out: list[list[float]] = []
        best: float | None = None
        for number, value in rows:
            if value is None:
                continue
            if best is None or (value < best if study.direction == "min" else value > best):
                best = value
            out.append([number, value, best])
    return out


def curves(
    engine: Engine, study: StudyRow, numbers: list[int] | None, limit: int = 200
) -> dict[int, list[list[float]]]:
    """Intermediate values by trial: those of ``numbers``, or of the first ``limit`` trials."""
    sql = (
        "SELECT t.number, i.step, i.intermediate_value FROM trials t "
        "JOIN trial_intermediate_values i ON i.trial_id = t.trial_id WHERE t.study_id = :s "
    )
    bind: dict[str, Any] = {"s": study.id}
    if numbers is not None:
        query = sa.text(sql + "AND t.number IN :n ORDER BY t.number, i.step").bindparams(
            sa.bindparam("n", expanding=True)
        )
        bind["n"] = numbers or [-1]
    else:
        query = sa.text(sql + "AND t.number < :l ORDER BY t.number, i.step")
        bind["l"] = limit
    out: dict[int, list[list[float]]] = defaultdict(list)
    with engine.connect() as conn:
        for number, step, value in conn.execute(query, bind):
            if value is not None:
                out[int(number)].append([step, value])
    return dict(out)


def param_rows(engine: Engine, study: StudyRow) -> dict[str, Any]:
    """Complete trials' parameters and values, for the parallel coordinates."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT t.number, p.param_name, p.param_value, p.distribution_json, v.value "
                "FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
                "AND v.objective = 0 JOIN trial_params p ON p.trial_id = t.trial_id "
                "WHERE t.study_id = :s AND t.state = 'COMPLETE' ORDER BY t.number"
            ),
            {"s": study.id},
        )
        trials: dict[int, dict[str, Any]] = {}
        for number, name, pvalue, dist, value in rows:
            trial = trials.setdefault(number, {"number": number, "value": value, "params": {}})
            trial["params"][name] = _param(pvalue, dist)
    names = sorted({n for t in trials.values() for n in t["params"]})
    return {"params": names, "trials": list(trials.values())}
