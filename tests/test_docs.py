"""Every ```yaml block of docs/*.md is a job file that `cauce run` runs, or refuses as it says.

Leading comment lines of a block direct the test:

- ``# not-a-job`` (first line): the block is skipped (a fragment, a config file, ...);
- ``# expect-error: <text>``: `cauce run` must exit 2 with one stderr line ``error: ...``
  containing ``<text>``;
- ``# env: NAME=value [NAME=value ...]``: set for that run (``CAUCE_GPUS=0,1``, say).

Any other block must run to exit 0.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ROOT, cauce, fenced_blocks

# A dozen real `cauce run`s, about a second each.
pytestmark = pytest.mark.slow

DOCS = ROOT / "docs"


@dataclass(frozen=True)
class Block:
    doc: Path
    index: int  # among the ```yaml blocks of its file, from 0
    line: int  # of its first line in the file, from 1
    text: str

    @property
    def directives(self) -> dict[str, str]:
        """``# name: value`` comments at the top of the block."""
        found: dict[str, str] = {}
        for line in self.text.splitlines():
            if not line.startswith("#"):
                break
            name, sep, value = line[1:].strip().partition(":")
            if sep:
                found.setdefault(name.strip(), value.strip())
        return found

    @property
    def is_job(self) -> bool:
        first = self.text.splitlines()[0].strip() if self.text.strip() else ""
        return first != "# not-a-job"


def yaml_blocks(doc: Path) -> list[Block]:
    found = fenced_blocks(doc.read_text(encoding="utf-8"), "yaml", str(doc))
    return [Block(doc, index, line, text) for index, (line, text) in enumerate(found)]


def _job_blocks() -> list[Block]:
    return [
        block for doc in sorted(DOCS.glob("*.md")) for block in yaml_blocks(doc) if block.is_job
    ]


JOBS = _job_blocks()


def test_job_spec_examples_are_collected() -> None:
    """The reference keeps runnable examples of each kind, so the test below cannot pass empty."""
    mine = [block for block in JOBS if block.doc.name == "job-spec.md"]
    kinds = [block.directives for block in mine]
    assert sum("expect-error" not in d for d in kinds) >= 5
    assert sum("expect-error" in d for d in kinds) >= 3
    assert any("CAUCE_GPUS" in d.get("env", "") for d in kinds)


def test_blocks_are_read_as_written(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    lines = [
        "text",
        "```yaml",
        "# not-a-job",
        "local: {gpus: 0}",
        "```",
        "- item",
        "",
        "  ```yaml",
        "  # expect-error: oops",
        "  # env: A=1 B='two words'",
        "  name: x",
        "  ```",
        "```yaml",
        "command: 'true'",
        "```",
    ]
    doc.write_text("\n".join(lines) + "\n", encoding="utf-8")
    blocks = yaml_blocks(doc)
    assert [(b.index, b.line, b.is_job) for b in blocks] == [
        (0, 3, False),
        (1, 9, True),
        (2, 14, True),
    ]
    assert blocks[1].text == "# expect-error: oops\n# env: A=1 B='two words'\nname: x\n"
    assert blocks[1].directives == {"expect-error": "oops", "env": "A=1 B='two words'"}
    assert blocks[2].directives == {}


@pytest.mark.parametrize(
    "block", JOBS, ids=[f"{block.doc.name}-block{block.index}" for block in JOBS]
)
def test_doc_example(block: Block, tmp_path: Path, cauce_env: dict[str, str]) -> None:
    where = f"{block.doc.relative_to(ROOT)}:{block.line}"
    job = tmp_path / f"{block.doc.stem}-{block.index}.yaml"
    job.write_text(block.text, encoding="utf-8")
    env = dict(cauce_env)
    for item in shlex.split(block.directives.get("env", "")):
        name, sep, value = item.partition("=")
        assert sep, f"{where}: '# env:' wants NAME=value, got {item!r}"
        env[name] = value

    done = cauce(["run", str(job)], env, cwd=tmp_path, timeout=120)

    shown = f"{where}\n--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
    expected = block.directives.get("expect-error")
    if expected is None:
        assert done.returncode == 0, shown
        return
    assert done.returncode == 2, shown
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    assert expected in lines[0], shown
