"""The archive of Spark's classes (cauce.cluster.spark._classes): the first scoring session of a
machine makes it once its work is done, the next JVMs map it, a damaged one stops nothing and
is made again, ``CAUCE_CLASS_ARCHIVE=off`` adds nothing.

Real JVMs, each in a Python process of its own (a JVM's options are set when it starts, once per
process), with ``XDG_CACHE_HOME`` in the test's folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cauce.errors import SpecError

pytest.importorskip("pyspark")

_JAVA = shutil.which("java")
needs_jcmd = pytest.mark.skipif(
    _JAVA is None or not os.access(Path(os.path.realpath(_JAVA)).parent / "jcmd", os.X_OK),
    reason="needs java with jcmd beside it",
)

#: A scoring session: what its JVM was started with, and the archives before and after it.
SCORE = """
import json, os, sys
from pathlib import Path
from cauce.serve import scoring_session

folder = Path(os.environ["XDG_CACHE_HOME"]) / "cauce" / "spark-classes"
listed = lambda: sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
with scoring_session("local[2]", "classes") as session:
    assert session.range(1000).count() == 1000
    jvm = session.sparkContext._jvm
    pid = int(jvm.java.lang.ProcessHandle.current().pid())
    seen = {
        "args": list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
                     .getInputArguments()),
        "info": jvm.java.lang.System.getProperty("java.vm.info"),
        "maps": Path(f"/proc/{pid}/maps").read_text(),
        "during": listed(),
    }
seen["after"] = listed()
print(json.dumps(seen))
"""


def _score(cache: Path, **env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", SCORE],
        env={**os.environ, "XDG_CACHE_HOME": str(cache), **env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Nothing of the archive on the terminal: the JDK's CDS warnings while it dumps ("Skipping
    # ...: Not linked"), its "Dynamic dump to file", its words on an archive it turns down.
    *printed, last = done.stdout.splitlines()
    terminal = done.stderr + "\n".join(printed)
    for noise in ("[cds", "Dynamic dump", "SharedArchiveFile", "shared archive"):
        assert noise not in terminal, terminal[-3000:]
    seen: dict[str, object] = json.loads(last)
    return seen


def _archives(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsa"))


@pytest.mark.slow
@pytest.mark.timeout(600)
@needs_jcmd
def test_the_first_session_makes_the_archive_the_next_map_it_a_damaged_one_is_made_again(
    tmp_path: Path,
) -> None:
    from cauce.cluster.spark._classes import class_archive

    cache = tmp_path / "cache"
    folder = cache / "cauce" / "spark-classes"
    env = {"XDG_CACHE_HOME": str(cache)}

    first = _score(cache)
    assert "-XX:+RecordDynamicDumpInfo" in first["args"]  # type: ignore[operator]
    assert first["during"] == []  # made after the work, not before
    (made,) = _archives(folder)
    assert first["after"] == [made.name]  # under its final name only, no temp file left
    key, size = made.stem.rsplit("-", 1)
    assert int(size) == made.stat().st_size > 10_000_000

    second = _score(cache)
    assert f"-XX:SharedArchiveFile={made}" in second["args"]  # type: ignore[operator]
    assert "-XX:+RecordDynamicDumpInfo" not in second["args"]  # type: ignore[operator]
    assert "sharing" in str(second["info"])
    assert str(made) in str(second["maps"])  # mapped, not only named
    assert _archives(folder) == [made]  # used as it is

    # Random bytes under a valid name: the JVM turns them down and starts all the same; the
    # file is deleted, so that the next session records the classes again.
    made.unlink()
    junk = folder / f"{key}-4096.jsa"
    junk.write_bytes(os.urandom(4096))
    third = _score(cache)
    assert f"-XX:SharedArchiveFile={junk}" in third["args"]  # type: ignore[operator]
    assert "-XX:+RecordDynamicDumpInfo" not in third["args"]  # type: ignore[operator]
    assert not junk.exists()
    assert _archives(folder) == []
    again = class_archive("local[2]", {}, record=True, environ={**os.environ, **env})
    assert again is not None and again.key == key and again.path is None


@needs_jcmd
def test_a_truncated_archive_is_deleted_before_a_jvm_maps_it(tmp_path: Path) -> None:
    """A JVM that maps a truncated archive dies of SIGBUS (JDK 17): the size in the name is
    checked first. Also: the user's Java options are kept, ours go after them."""
    from cauce.cluster.spark._classes import class_archive

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    made = class_archive("local[2]", {}, record=True, environ=env)
    assert made is not None and made.path is None  # none yet: this JVM would record
    assert made.java_options("-Da=1") == "-Da=1 -XX:+RecordDynamicDumpInfo -Xlog:cds*=off"
    whole = made.folder / f"{made.key}-100.jsa"
    whole.write_bytes(b"x" * 100)
    cut = made.folder / f"{made.key}-200.jsa"
    cut.write_bytes(b"x" * 150)
    found = class_archive("local[2]", {}, record=False, environ=env)
    assert found is not None and found.path == whole
    assert not cut.exists()
    assert found.java_options(None).startswith(f"-XX:SharedArchiveFile={whole} -Xshare:auto")


def test_off_adds_nothing_and_a_bad_value_is_named_with_the_choices(tmp_path: Path) -> None:
    from cauce.cluster.spark._classes import class_archive

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    off = {**env, "CAUCE_CLASS_ARCHIVE": " OFF "}
    assert class_archive("local[2]", {}, record=True, environ=off) is None
    assert class_archive("spark://h:7077", {}, record=True, environ=env) is None
    users = {"spark.driver.extraJavaOptions": "-Xshare:off"}
    assert class_archive("local[2]", users, record=True, environ=env) is None
    assert not (tmp_path / "cauce").exists()
    with pytest.raises(SpecError, match=r"CAUCE_CLASS_ARCHIVE must be on or off, got 'maybe'"):
        class_archive("local[2]", {}, record=True, environ={**env, "CAUCE_CLASS_ARCHIVE": "maybe"})
