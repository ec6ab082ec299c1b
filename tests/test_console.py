"""The console shared by `cauce run`, `cauce tune` and pipelines: its two renderings."""

from __future__ import annotations

import io
import subprocess
import sys

from cauce._console import Console


def test_lines_write_the_view_once_per_change_of_its_key() -> None:
    out = io.StringIO()
    console = Console(out, live=False)
    assert not console.live
    console.line("[prepare] preparing")
    for done in (0, 0, 1, 1, 2):
        console.show(f"{done} rows", key=done)
    console.show("no key: always", key=None)
    console.show("no key: always", key=None)
    console.end()
    console.show("2 rows", key=2)  # a new view: its first state is written
    assert out.getvalue().splitlines() == [
        "[prepare] preparing",
        "0 rows",
        "1 rows",
        "2 rows",
        "no key: always",
        "no key: always",
        "2 rows",
    ]


def test_live_keeps_lines_and_shows_the_last_view_unless_transient() -> None:
    out = io.StringIO()
    console = Console(out, live=True)
    assert console.live
    console.line("[a] [not markup] started")
    for done in range(3):
        console.show(f"view {done}", key=done)
    console.end()
    text = out.getvalue()
    assert "[a] [not markup] started" in text
    assert "view 2" in text and "view 0" not in text.split("view 2")[-1]

    gone = io.StringIO()
    console = Console(gone, live=True, transient=True)
    console.show("bar")
    console.end()
    console.line("after")
    assert gone.getvalue().endswith("after\n") and "bar" not in gone.getvalue()


def test_without_rich_a_terminal_gets_lines() -> None:
    """`cauce run` needs no rich: asked for live without it, the console writes lines."""
    code = (
        "import io, sys; sys.modules['rich'] = None\n"
        "from cauce._console import Console\n"
        "out = io.StringIO(); c = Console(out, live=True); c.show('x', key=1); c.show('x', key=1)\n"
        "print(c.live, repr(out.getvalue()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False 'x\\n'"
