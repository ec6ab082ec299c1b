"""``cauce tune JOB.yaml`` runs a study; ``cauce trials [STUDY]`` shows studies and trials."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from cauce.cli._format import FORMATS, emit
from cauce.cli._jobs import table
from cauce.cli._options import env_option

__all__ = ["register"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(sub: Any) -> None:
    history = argparse.ArgumentParser(add_help=False)
    env_option(
        history,
        "--history",
        env="CAUCE_HISTORY",
        help="SQLAlchemy URL of the history store, which also keeps the studies (default: "
        "SQLite in $CAUCE_HOME)",
    )
    tune = sub.add_parser(
        "tune",
        parents=[history],
        help="run a hyperparameter search over a job file (its tune: section)",
        description="Run the study of a job file: trials with parameters from the tune: "
        "section, each a gang of its own, several at a time, the unpromising ones pruned. "
        "Running it again continues the study (even after kill -9). Exit 0 when the study has "
        "its trials, 1 when more than max_failures trials failed, 2 for a bad spec, 130 when "
        "interrupted.",
    )
    tune.add_argument("job", help="the job YAML file, with a tune: section")
    env_option(
        tune,
        "--trials",
        env="CAUCE_TUNE_TRIALS",
        type=_positive,
        help="how many trials the study should have, complete or pruned (default: the spec's "
        "tune.trials)",
    )
    env_option(
        tune,
        "--parallel",
        env="CAUCE_TUNE_PARALLEL",
        type=_positive,
        help="trials running at once (default: the spec's tune.parallel)",
    )
    env_option(
        tune,
        "--study",
        env="CAUCE_STUDY",
        help="the study's name; the same name continues a study (default: the job's name)",
    )
    tune.add_argument(
        "--cluster",
        default=None,
        help="where trials run: local (default); overrides the spec's cluster, which overrides "
        "$CAUCE_CLUSTER",
    )
    env_option(
        tune,
        "--plain",
        env="CAUCE_PLAIN",
        flag=True,
        help="print one line per trial event instead of a live table (the default when "
        "stdout is not a terminal)",
    )
    tune.set_defaults(func=cmd_tune)

    trials = sub.add_parser(
        "trials",
        parents=[history],
        help="the trials of a study, or the studies",
        description="Without STUDY, list the studies; with it, list its trials.",
    )
    trials.add_argument("study", nargs="?", help="a study name (see 'cauce trials')")
    trials.add_argument("--format", choices=FORMATS, default="table", help="output format")
    trials.set_defaults(func=cmd_trials)


def cmd_tune(args: argparse.Namespace) -> int:
    from cauce.tune import import_optuna, make_console, quiet_optuna, tune

    import_optuna()
    quiet_optuna()
    console = make_console(sys.stdout, live=False if args.plain else None)
    try:
        result = tune(
            args.job,
            trials=args.trials,
            parallel=args.parallel,
            study=args.study,
            cluster=args.cluster,
            history=args.history,
            console=console,
        )
    finally:
        close = getattr(console, "close", None)
        if callable(close):
            close()
    if result.ok:
        return 0
    sys.stderr.write(f"error: study {result.study} {result.status}: {result.reason}\n")
    return 130 if result.status == "interrupted" else 1


def cmd_trials(args: argparse.Namespace) -> int:
    from cauce.tune import import_optuna, quiet_optuna, studies, trials

    import_optuna()
    quiet_optuna()
    if args.study is None:
        found = studies(history=args.history)
        if args.format == "json":
            rows = [
                {
                    "study": s.name,
                    "job": s.job,
                    "metric": s.metric,
                    "direction": s.direction,
                    "counts": dict(s.counts),
                    "best": _trial_dict(s.best) if s.best is not None else None,
                }
                for s in found
            ]
            return emit(rows)
        if not found:
            sys.stdout.write("no studies yet; run one with: cauce tune JOB.yaml\n")
            return 0
        lines: list[tuple[str, ...]] = [
            ("STUDY", "OBJECTIVE", "COMPLETE", "PRUNED", "FAILED", "RUNNING", "BEST")
        ]
        for s in found:
            best = f"trial {s.best.number}: {_value(s.best.value)}" if s.best is not None else "-"
            lines.append(
                (
                    s.name,
                    f"{s.direction} {s.metric}",
                    str(s.counts.get("complete", 0)),
                    str(s.counts.get("pruned", 0)),
                    str(s.counts.get("failed", 0)),
                    str(s.counts.get("running", 0)),
                    best,
                )
            )
        sys.stdout.write(table(lines) + "\n")
        from cauce.ui import portal_hint

        sys.stdout.write(portal_hint("studies") + "\n")
        return 0
    found_trials = trials(args.study, history=args.history)
    if args.format == "json":
        return emit([_trial_dict(t) for t in found_trials])
    from cauce.tune import describe_params, first_line

    shown: list[tuple[str, ...]] = [
        ("TRIAL", "STATE", "VALUE", "STEP", "SECONDS", "JOB", "PARAMS", "NOTE")
    ]
    for t in found_trials:
        seconds = (
            f"{(t.ended_at or time.time()) - t.started_at:.1f}" if t.started_at is not None else "-"
        )
        shown.append(
            (
                str(t.number),
                t.state,
                _value(t.value),
                "-" if t.step is None else str(t.step),
                seconds,
                t.job_id or "-",
                describe_params(t.params),
                first_line(t.note, 80),
            )
        )
    sys.stdout.write(table(shown) + "\n")
    from cauce.ui import portal_hint

    sys.stdout.write(portal_hint("studies", args.study) + "\n")
    return 0


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _trial_dict(trial: Any) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": str(trial.state),
        "value": trial.value,
        "step": trial.step,
        "params": dict(trial.params),
        "job_id": trial.job_id,
        "started_at": trial.started_at,
        "ended_at": trial.ended_at,
        "note": trial.note,
    }
