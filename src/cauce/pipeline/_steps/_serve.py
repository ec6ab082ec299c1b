"""``serve``: the model served by ``cauce serve`` in a child process. Without ``--serve`` it
answers one prediction (the evaluate step's example, checked against the offline one) on a
free port and stops; with it, it stays up on its port until Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import urllib.request
from collections.abc import Mapping
from typing import Any

from cauce._util.signals import handle_signals
from cauce.pipeline._context import StepContext, StepKind
from cauce.pipeline._steps._server import server
from cauce.pipeline._steps._uris import location

__all__ = ["KIND", "curl_command"]


def _interrupt(_signum: int) -> None:
    raise KeyboardInterrupt


def curl_command(base: str, model_name: str, record: Mapping[str, Any]) -> str:
    body = json.dumps({"records": [record]}, separators=(",", ":"))
    return (
        f"curl -s -X POST {base}/v2/models/{model_name}/predict "
        f"-H 'content-type: application/json' -d {shlex.quote(body)}"
    )


def _predict(ctx: StepContext, base: str, model: str, example: Mapping[str, Any]) -> Any:
    """The example record over HTTP; the answer must match the offline prediction."""
    body = json.dumps({"records": [dict(example["record"])]}).encode()
    request = urllib.request.Request(
        f"{base}/v2/models/{model}/predict",
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
        f"  one prediction over HTTP: {example['output']} {served:.6f} (offline {offline:.6f})"
    )
    return answer


def run(ctx: StepContext) -> dict[str, Any]:
    from cauce.serve import local_model_dir, read_spec

    model = location(ctx, ctx.config["model"])
    model_dir = local_model_dir(model)  # a model on shared storage: served from a local copy
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
        f"serving {model}"
        + (f" on {host}:{port} until interrupted" if ctx.serve_forever else " to check it"),
    )
    answer: dict[str, Any] = {}
    with server(model_dir, host, bind_port) as (child, base):
        if example is not None:
            answer = _predict(ctx, base, spec.name, example)
        shown = curl_command(
            base if ctx.serve_forever else f"http://{host}:{suggest}",
            spec.name,
            dict(example["record"]) if example is not None else {},
        )
        if ctx.serve_forever:
            # SIGTERM as Ctrl-C, so that ``kill PID`` stops a served pipeline cleanly; set
            # before the URL is shown, so that a SIGTERM right after it is one too.
            sigterm = handle_signals([signal.SIGTERM], _interrupt)
            with sigterm, contextlib.suppress(KeyboardInterrupt):
                ctx.console.line(f"  serving on {base}; query it with\n    {shown}")
                ctx.console.line("  Ctrl-C (or SIGTERM) stops it")
                child.wait()
    ctx.console.step_finished(
        ctx.step.name, "served and stopped" if ctx.serve_forever else "checked and stopped"
    )
    result: dict[str, Any] = {
        "outputs": {"model": str(model)},
        "serve": f"cauce serve {shlex.quote(str(model))} --host {host} --port {suggest}",
        "curl": shown,
    }
    if answer:
        result["prediction"] = answer["outputs"]
    return result


def summary(label: str, result: Mapping[str, Any], serving: bool) -> list[str]:
    lines = []
    if "prediction" in result:
        lines.append(f"{label}one prediction over HTTP: {json.dumps(result['prediction'])}")
    if not serving:
        lines.append(f"  query it: {result['serve']} &")
        lines.append(f"            {result['curl']}")
    return lines


KIND = StepKind(
    "serve",
    run,
    keys=("model", "host", "port", "example"),
    required=("model",),
    roots=("outputs",),
    summary=summary,
    serves=True,
)
