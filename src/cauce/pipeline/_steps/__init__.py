"""The kinds of step, by name: one module each, registered here (as Optuna's samplers are).

A kind is a :class:`~cauce.pipeline._context.StepKind`: the settings it takes, what later steps
may read of it, what it does, and its lines in the summary. ``train`` is another name of
``run`` (see ``cauce.pipeline._spec``).
"""

from __future__ import annotations

from collections.abc import Mapping

from cauce.pipeline._context import StepKind
from cauce.pipeline._steps import (
    _evaluate,
    _package,
    _prepare,
    _run,
    _serve,
    _stream,
    _tune,
)

__all__ = ["KINDS"]

#: Step kinds by name, in the order a pipeline usually runs them.
KINDS: Mapping[str, StepKind] = {
    kind.name: kind
    for kind in (
        _prepare.KIND,
        _tune.KIND,
        _run.KIND,
        _evaluate.KIND,
        _serve.KIND,
        _package.KIND,
        _stream.KIND,
    )
}
