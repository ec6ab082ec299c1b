"""What each kind of step does. Each takes the step's resolved settings and returns its result:
plain JSON that later steps read through ``${steps.NAME...}`` and that the state file keeps."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cauce.errors import CauceError, GangFailed, SpecError
from cauce.pipeline._console import PipelineConsole
from cauce.pipeline._spec import PipelineSpec, StepSpec
from cauce.pipeline._state import digest, hash_files
from cauce.spec import JobSpec, load_job
from cauce.spec._parse import with_spark_conf

__all__ = ["StepContext", "code_hash", "run_step"]

_SPARK_PREFIXES = ("spark://", "local[", "yarn", "k8s://")


@dataclass
class StepContext:
    pipeline: PipelineSpec
    step: StepSpec
    config: Mapping[str, Any]  # references resolved
    key: str
    home: Path  # $CAUCE_HOME/pipelines/NAME
    cauce_home: Path
    history: str | None
    cluster: str | None
    console: PipelineConsole
    results: Mapping[str, Mapping[str, Any]]  # earlier steps'
    force: bool = False
    serve_forever: bool = False
    show_output: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def path(self, value: str) -> Path:
        """A path from the pipeline file's folder (absolute ones as they are)."""
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else Path(self.pipeline.folder) / p

    def fail(self, message: str) -> CauceError:
        return CauceError(f"step {self.step.name}: {message}")


def run_step(ctx: StepContext) -> dict[str, Any]:
    kinds: dict[str, Callable[[StepContext], dict[str, Any]]] = {
        "prepare": _prepare,
        "tune": _tune,
        "run": _run,
        "evaluate": _evaluate,
        "serve": _serve,
        "package": _package,
    }
    return kinds[ctx.step.kind](ctx)


# --- code ---------------------------------------------------------------------------------------


def _job_of(ctx: StepContext) -> JobSpec:
    """The step's job file, with its ``env`` and ``args`` applied."""
    spec = with_spark_conf(
        load_job(ctx.path(str(ctx.config["job"]))), [], os.environ.get("CAUCE_SPARK_CONF")
    )
    env = {k: str(v) for k, v in (ctx.config.get("env") or {}).items()}
    if env:
        merged = dict(spec.env)
        merged.update(env)
        spec = replace(spec, env=tuple(merged.items()))
    args = [str(a) for a in ctx.config.get("args") or []]
    if args:
        if not isinstance(spec.command, str) or any(r.command for r in spec.roles):
            raise SpecError(
                f"steps.{ctx.step.name}.args",
                "needs a job with one top-level command string to append to; put the "
                "arguments in the job file's command instead",
                source=ctx.pipeline.source,
            )
        spec = replace(spec, command=f"{spec.command} {shlex.join(args)}")
    return spec


def code_hash(ctx: StepContext) -> str:
    """The code a job step runs: its job file and the files its ``code:`` globs name (by
    default every ``*.py`` under the job's working directory)."""
    if ctx.step.kind not in ("tune", "run"):
        return ""
    job_file = ctx.path(str(ctx.config["job"]))
    if not job_file.is_file():
        raise SpecError(
            f"steps.{ctx.step.name}.job",
            f"no job file at {job_file}; paths start at the pipeline file's folder",
            source=ctx.pipeline.source,
        )
    spec = load_job(job_file)
    workdir = Path(spec.workdir).resolve()
    files: set[Path] = set()
    for pattern in [str(p) for p in ctx.config.get("code") or ["**/*.py"]]:
        found = [
            p.resolve()
            for p in workdir.glob(pattern)
            if p.is_file()
            and not any(
                part.startswith((".", "__pycache__")) for part in p.relative_to(workdir).parts
            )
        ]
        if not found and ctx.config.get("code"):
            raise SpecError(
                f"steps.{ctx.step.name}.code",
                f"{pattern!r} matches no file in {workdir}",
                source=ctx.pipeline.source,
            )
        files.update(p for p in found if p.is_relative_to(workdir))
    # Names relative to the working folder: a checkout moved elsewhere keeps its cache.
    return digest([job_file.read_text(encoding="utf-8"), hash_files(sorted(files), workdir)])


# --- prepare ------------------------------------------------------------------------------------


def _prepare(ctx: StepContext) -> dict[str, Any]:
    from cauce.data import prepare

    function = str(ctx.config["function"])
    module, sep, name = function.rpartition(":")
    if not sep:
        raise SpecError(
            f"steps.{ctx.step.name}.function",
            f"must be MODULE:FUNCTION or PATH.py:FUNCTION, got {function!r}",
            source=ctx.pipeline.source,
        )
    if module.endswith(".py"):
        function = f"{ctx.path(module)}:{name}"
    elif ctx.pipeline.folder not in sys.path:
        sys.path.insert(0, ctx.pipeline.folder)
    out = ctx.path(str(ctx.config["out"])) if ctx.config.get("out") else ctx.home / ctx.step.name
    engine = str(ctx.config.get("engine") or "")
    master = ctx.config.get("spark_master")
    if not engine:
        spark = ctx.cluster is not None and ctx.cluster.startswith(_SPARK_PREFIXES)
        engine = "spark" if spark else "duckdb"
        master = master or (ctx.cluster if spark else None)
    rows: dict[str, int] = {}

    def progress(split: str, written: int) -> None:
        rows[split] = written
        ctx.console.progress(
            sum(rows.values()),
            None,
            "rows written",
            ", ".join(f"{k} {v:,}" for k, v in rows.items()),
        )

    ctx.console.step_started(ctx.step.name, f"preparing {function} into {out} ({engine})")
    manifest = prepare(
        function,
        out,
        engine=engine,
        spark_master=str(master) if master else None,
        force=ctx.force,
        progress=progress,
    )
    split_rows = dict(manifest.rows)
    ctx.extra["ran"] = bool(rows)
    how = "written" if rows else "up to date, nothing ran"
    ctx.console.step_finished(
        ctx.step.name,
        f"{how}: "
        + ", ".join(f"{k} {v:,} rows" for k, v in split_rows.items())
        + f"; content {manifest.content_hash[:16]}",
    )
    return {
        "outputs": {
            "dataset": str(out),
            "content_hash": manifest.content_hash,
            "rows": split_rows,
        },
    }


# --- tune ---------------------------------------------------------------------------------------


class _TuneBar:
    """A :class:`~cauce.tune.TuneConsole` drawing the study as a bar of finished trials."""

    def __init__(self, console: PipelineConsole, target: int) -> None:
        self.console = console
        self.target = target

    def _draw(self, progress: Any) -> None:
        best = progress.best
        note = f"{progress.count('running')} running"
        if best is not None:
            note += f", best {progress.metric} {best.value:.4f} (trial {best.number})"
        self.console.progress(progress.done, self.target, "trials", note)

    def started(self, progress: Any, note: str) -> None:
        if note:
            self.console.line(f"  {note}")
        self._draw(progress)

    def changed(self, trial: Any, progress: Any) -> None:
        if trial.state == "failed":
            first = (trial.note.splitlines() or ["no cause recorded"])[0]
            self.console.line(f"  trial {trial.number} failed: {first}")
        self._draw(progress)

    def tick(self, progress: Any) -> None:
        self._draw(progress)

    def finished(self, result: Any) -> None:
        pass


def _tune(ctx: StepContext) -> dict[str, Any]:
    from cauce.tune import tune
    from cauce.tune._optuna import quiet_optuna
    from cauce.tune._session import resolve as resolve_study

    quiet_optuna()
    spec = _job_of(ctx)
    study = f"{ctx.pipeline.name}-{ctx.step.name}-{ctx.key[:10]}"
    trials = ctx.config.get("trials")
    parallel = ctx.config.get("parallel")
    _, target, width, _ = resolve_study(spec, trials, parallel, study)
    ctx.console.step_started(
        ctx.step.name, f"study {study}: {target} trials of {spec.source}, {width} at a time"
    )
    result = tune(
        spec,
        trials=target,
        parallel=width,
        study=study,
        cluster=ctx.cluster,
        history=ctx.history,
        home=ctx.cauce_home,
        console=_TuneBar(ctx.console, target),
    )
    if result.status == "interrupted":  # Ctrl-C or SIGTERM: the study continues next run
        raise KeyboardInterrupt
    if not result.ok or result.best is None:
        raise ctx.fail(
            f"study {study} {result.status}: {result.reason or 'no trial completed'} "
            f"(cauce trials {study})"
        )
    best = result.best
    counts: dict[str, int] = {}
    for trial in result.trials:
        counts[trial.state] = counts.get(trial.state, 0) + 1
    ctx.console.step_finished(
        ctx.step.name,
        f"best {result.metric} {best.value:.4f}, trial {best.number} of "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
    )
    return {
        "study": study,
        "best": {
            "params": dict(best.params),
            "value": best.value,
            "trial": best.number,
            "job_id": best.job_id,
            "metric": result.metric,
        },
        "trials": counts,
        "outputs": {"study": study},
    }


# --- run ----------------------------------------------------------------------------------------


class _JobConsole:
    """The driver's lines under the step: its status lines; task output only when asked."""

    def __init__(self, console: PipelineConsole, show_output: bool) -> None:
        self.console = console
        self.show_output = show_output

    def status(self, text: str) -> None:
        self.console.line(f"  {text}")

    def output(self, task_id: str, line: str) -> None:
        if self.show_output:
            self.console.line(f"  [{task_id}] {line}")


def _run(ctx: StepContext) -> dict[str, Any]:
    from cauce.cluster import get_cluster
    from cauce.gang import JobDriver
    from cauce.history import open_store

    spec = _job_of(ctx)
    params = ctx.config.get("params") or {}
    if not isinstance(params, Mapping):
        raise ctx.fail(f"params must be a mapping, got {params!r}")
    progress = ctx.config.get("progress") or {}
    total = progress.get("total")
    metric = progress.get("metric")
    latest: dict[str, float] = {}
    seen_steps: set[int] = set()

    def on_metrics(rows: list[Any]) -> None:
        for row in rows:
            seen_steps.add(row.step)
            latest[row.name] = row.value
        note = f"{metric} {latest[metric]:.4f}" if metric and metric in latest else ""
        ctx.console.progress(
            len(seen_steps), total, "steps reported" if not total else "steps", note
        )

    address = ctx.cluster or spec.cluster or os.environ.get("CAUCE_CLUSTER") or "local"
    ctx.console.step_started(
        ctx.step.name,
        f"running {spec.source} on {address}"
        + (f" with {', '.join(f'{k}={v}' for k, v in params.items())}" if params else ""),
    )
    backend = get_cluster(address, spark_conf=dict(spec.spark))
    store = open_store(ctx.history)
    try:
        driver = JobDriver(
            spec,
            backend,
            store,
            ctx.cauce_home,
            console=_JobConsole(ctx.console, ctx.show_output),
            params=dict(params),
            on_metrics=on_metrics,
        )
        result = driver.run()
        tasks = store.get_tasks(result.job_id)
        first = tasks[0].task_id if tasks else ""
        reported = {r.name: r.value for r in store.get_metrics(result.job_id) if r.task_id == first}
    finally:
        store.close()
        close = getattr(backend, "close", None)
        if callable(close):
            close()
    if not result.ok:
        raise GangFailed(result.job_id, result.root_cause, status=result.status)
    run_dir = Path(result.run_dir)
    outputs: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    for name, rel in (ctx.config.get("outputs") or {}).items():
        path = run_dir / str(rel)
        if not path.exists():
            raise ctx.fail(
                f"job {result.job_id} succeeded but did not write outputs.{name}: nothing at "
                f"{path} (cauce logs {result.job_id})"
            )
        outputs[name] = str(path)
        if path.is_file() and path.suffix == ".json":
            try:
                parsed[name] = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ctx.fail(f"outputs.{name} ({path}) is not valid JSON: {exc}") from None
    ctx.console.step_finished(
        ctx.step.name,
        f"job {result.job_id} succeeded"
        + (f" after {result.restarts} restart(s)" if result.restarts else "")
        + "".join(f"; {k}: {v}" for k, v in outputs.items()),
    )
    return {
        "job_id": result.job_id,
        "run_dir": str(run_dir),
        "outputs": outputs,
        "json": parsed,
        "metrics": reported,
        "params": dict(params),
    }


# --- evaluate -----------------------------------------------------------------------------------


def roc_auc(labels: Any, scores: Any) -> float:
    """The chance that a positive outscores a negative, ties counting half."""
    import numpy as np

    y = np.asarray(labels).astype(bool)
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(scores), return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    return float((average_rank[inverse][y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def _record(batch: Any, row: int, features: list[str]) -> dict[str, Any]:
    """One row of a record batch as the raw record ``/predict`` takes (NaN and null: None)."""
    import math

    record: dict[str, Any] = {}
    for name in features:
        value = batch.column(batch.schema.get_field_index(name))[row].as_py()
        if isinstance(value, float) and math.isnan(value):
            value = None
        record[name] = value
    return record


def _evaluate(ctx: StepContext) -> dict[str, Any]:
    import numpy as np
    import pyarrow.parquet as pq

    from cauce.data import read_manifest
    from cauce.serve import load_model
    from cauce.serve._predict import arrow_inputs

    model_dir = ctx.path(str(ctx.config["model"]))
    dataset = str(ctx.config["dataset"])
    split_name = str(ctx.config.get("split") or "test")
    label = str(ctx.config["label"])
    if "://" in dataset:
        raise ctx.fail(f"reads local datasets only for now; {dataset} is a URI")
    manifest = read_manifest(ctx.path(dataset))
    split = manifest.split(split_name)
    model = load_model(model_dir)
    pre = model.spec.preprocessing
    if pre is None:
        raise ctx.fail(
            f"model {model_dir} has no preprocessing in cauce-model.json: evaluate scores raw "
            "records, as the server does; save the model with preprocessing="
        )
    output = model.outputs[0].name
    ctx.console.step_started(
        ctx.step.name,
        f"scoring split {split_name} ({split.rows:,} rows) with {model_dir}, as the server would",
    )
    scores, labels = [], []
    example: dict[str, Any] = {}
    done = 0
    for info in split.files:
        for batch in pq.ParquetFile(Path(manifest.root) / info.path).iter_batches(8192):
            index = batch.schema.get_field_index(label)
            if index < 0:
                raise ctx.fail(f"split {split_name} has no column {label!r} (label)")
            y = batch.column(index).to_numpy(zero_copy_only=False).astype(np.float64)
            if not np.isin(y, (0.0, 1.0)).all():
                raise ctx.fail(
                    f"label {label!r} must be 0 or 1: evaluate handles binary classification "
                    f"for now (found {sorted(set(np.unique(y).tolist()))[:5]})"
                )
            out = model.predict(arrow_inputs(pre, batch))[output].astype(np.float64).reshape(-1)
            if not example:
                example = {
                    "record": _record(batch, 0, pre.features),
                    "prediction": float(out[0]),
                    "output": output,
                    "label": float(y[0]),
                }
            scores.append(out)
            labels.append(y)
            done += batch.num_rows
            ctx.console.progress(done, split.rows, "rows scored")
    p, y = np.concatenate(scores), np.concatenate(labels)
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    metrics = {
        "auc": roc_auc(y, p),
        "logloss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log1p(-clipped))),
        "accuracy": float(np.mean((p >= 0.5) == (y == 1.0))),
        "positive_rate": float(y.mean()),
        "rows": len(y),
    }
    compare: dict[str, dict[str, float]] = {}
    for name, value in (ctx.config.get("compare") or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ctx.fail(f"compare.{name} must be a number (an AUC), got {value!r}")
        compare[name] = {"auc": float(value), "difference": metrics["auc"] - float(value)}
    out_dir = ctx.home / ctx.step.name
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "model": str(model_dir),
        "dataset": {"path": manifest.root, "content_hash": manifest.content_hash},
        "split": split_name,
        "metrics": metrics,
        "compare": compare,
        "example": example,
    }
    path = out_dir / "evaluation.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    versus = "".join(f", {n} {c['auc']:.4f} ({c['difference']:+.4f})" for n, c in compare.items())
    ctx.console.step_finished(
        ctx.step.name,
        f"{split_name} AUC {metrics['auc']:.4f}{versus}; log loss {metrics['logloss']:.4f}",
    )
    return {
        "metrics": metrics,
        "compare": compare,
        "example": example,
        "outputs": {"evaluation": str(path)},
        "model_name": model.name,
    }


# --- serve --------------------------------------------------------------------------------------

_LISTENING = re.compile(r"on http://(\[[^\]]+\]|[^:/\s]+):(\d+)")


@contextlib.contextmanager
def _server(model_dir: Path, host: str, port: int) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``cauce serve`` in a child process; yields it and its URL once it listens. Stopped with
    SIGTERM (it drains) when the block ends, then SIGKILL if it lingers. It leads its own
    process group, watched by a reaper: if this process is killed (even with SIGKILL), the
    server is stopped too."""
    from cauce.cluster._procs import Reaper

    argv = [sys.executable, "-m", "cauce", "serve", str(model_dir)]
    argv += ["--host", host, "--port", str(port)]
    reaper = Reaper(grace=30.0)
    child = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, start_new_session=True)
    reaper.watch(child.pid)
    url: list[str] = []
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert child.stderr is not None
        for line in child.stderr:
            lines.append(line.rstrip())
            match = _LISTENING.search(line)
            if match and not url:
                url.append(f"http://{match.group(1)}:{match.group(2)}")
                ready.set()
            elif url:
                sys.stderr.write(line)
        ready.set()

    reader = threading.Thread(target=read, name="serve-stderr", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not ready.wait(0.2):
            if time.monotonic() > deadline:
                raise CauceError("cauce serve did not start listening within 120 s")
        if not url:
            tail = "\n".join(lines[-10:])
            raise CauceError(f"cauce serve exited ({child.wait()}) before listening:\n{tail}")
        base = url[0]
        while True:  # listening is announced once the model is loaded; check it answers
            try:
                with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                if child.poll() is not None or time.monotonic() > deadline:
                    raise CauceError("cauce serve stopped answering before it was ready") from None
                time.sleep(0.1)
        yield child, base
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        reader.join(timeout=5)
        reaper.unwatch(child.pid)
        reaper.close()


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM as Ctrl-C, so that ``kill PID`` stops a served pipeline cleanly."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def curl_command(base: str, model_name: str, record: Mapping[str, Any]) -> str:
    body = json.dumps({"records": [record]}, separators=(",", ":"))
    return (
        f"curl -s -X POST {base}/v2/models/{model_name}/predict "
        f"-H 'content-type: application/json' -d {shlex.quote(body)}"
    )


def _serve(ctx: StepContext) -> dict[str, Any]:
    from cauce.serve import read_spec

    model_dir = ctx.path(str(ctx.config["model"]))
    spec = read_spec(model_dir)
    host = str(ctx.config.get("host") or "127.0.0.1")
    port = int(ctx.config.get("port", 8080))
    example = ctx.config.get("example")
    if example is not None and not (isinstance(example, Mapping) and "record" in example):
        raise ctx.fail("example must be an evaluate step's example, like ${steps.evaluate.example}")
    bind_port = port if ctx.serve_forever else 0
    suggest = port or 8080  # the port the summary suggests serving on
    ctx.console.step_started(
        ctx.step.name,
        f"serving {model_dir}"
        + (f" on {host}:{port} until interrupted" if ctx.serve_forever else " to check it"),
    )
    answer: dict[str, Any] = {}
    with _server(model_dir, host, bind_port) as (child, base):
        if example is not None:
            body = json.dumps({"records": [dict(example["record"])]}).encode()
            request = urllib.request.Request(
                f"{base}/v2/models/{spec.name}/predict",
                data=body,
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as resp:
                answer = json.loads(resp.read())
            served = float(answer["outputs"][example["output"]][0])
            offline = float(example["prediction"])
            if abs(served - offline) > 1e-5 * max(1.0, abs(offline)):
                raise ctx.fail(
                    f"the server answered {served!r} for the example record, but the model "
                    f"gives {offline!r} offline"
                )
            ctx.console.line(
                f"  one prediction over HTTP: {example['output']} {served:.6f} "
                f"(offline {offline:.6f})"
            )
        shown = curl_command(
            base if ctx.serve_forever else f"http://{host}:{suggest}",
            spec.name,
            dict(example["record"]) if example is not None else {},
        )
        if ctx.serve_forever:
            ctx.console.line(f"  serving on {base}; query it with\n    {shown}")
            ctx.console.line("  Ctrl-C (or SIGTERM) stops it")
            with _stop_on_sigterm(), contextlib.suppress(KeyboardInterrupt):
                child.wait()
    ctx.console.step_finished(
        ctx.step.name, "served and stopped" if ctx.serve_forever else "checked and stopped"
    )
    result: dict[str, Any] = {
        "outputs": {"model": str(model_dir)},
        "serve": f"cauce serve {shlex.quote(str(model_dir))} --host {host} --port {suggest}",
        "curl": shown,
    }
    if answer:
        result["prediction"] = answer["outputs"]
    return result


# --- package ------------------------------------------------------------------------------------


def _package(ctx: StepContext) -> dict[str, Any]:
    from cauce.serve import package

    model_dir = ctx.path(str(ctx.config["model"]))
    out = ctx.path(str(ctx.config["out"])) if ctx.config.get("out") else ctx.home / ctx.step.name
    ctx.console.step_started(ctx.step.name, f"packaging {model_dir} into {out}")
    image = ctx.config.get("image")
    files = package(model_dir, out, image=str(image) if image else None)
    ctx.console.step_finished(ctx.step.name, f"{len(files)} files in {out}")
    return {"outputs": {"package": str(out), "files": [str(f) for f in files]}}
