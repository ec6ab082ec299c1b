"""The portal's pieces that need no browser: the file that tells the CLI where the portal
runs (a stale one is ignored), the hint without a portal, and the bind check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cauce.errors import SpecError
from cauce.ui import check_bind, portal_hint, portal_url
from cauce.ui._portal import remove_portal, write_portal


def test_the_portal_file_names_a_live_portal_only(tmp_path: Path) -> None:
    assert portal_url("/jobs/x", tmp_path) is None
    assert portal_hint("jobs", "a b/c", home=tmp_path) == (
        "portal:    cauce ui   (then open /jobs/a%20b%2Fc)"
    )
    write_portal("http://127.0.0.1:8265", "sqlite:///h.db", tmp_path)
    assert portal_url("/jobs/x", tmp_path) == "http://127.0.0.1:8265/jobs/x"
    assert portal_hint("jobs", "a b/c", home=tmp_path) == (
        "portal:    http://127.0.0.1:8265/jobs/a%20b%2Fc"
    )
    # A portal that is gone, or whose pid now belongs to another process, is not named.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    path = tmp_path / "ui.json"
    for pid, start in ((int(gone.stdout), "1"), (os.getpid(), "12")):
        data = {**json.loads(path.read_text()), "pid": pid, "start": start}
        path.write_text(json.dumps(data))
        assert portal_url("/jobs", tmp_path) is None
    path.write_text("{not json")
    assert portal_url("/jobs", tmp_path) is None
    write_portal("http://127.0.0.1:8265", "sqlite:///h.db", tmp_path)
    remove_portal(tmp_path)
    assert not path.exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_token(host: str) -> None:
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "myhost"])
def test_beyond_loopback_a_token_is_needed(host: str) -> None:
    check_bind(host, "t0ken")
    with pytest.raises(SpecError, match=f"--host {host} would show the history"):
        check_bind(host, None)
    with pytest.raises(SpecError, match="--token TOKEN or \\$CAUCE_UI_TOKEN"):
        check_bind(host, "")
