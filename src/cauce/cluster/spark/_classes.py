"""An archive of Spark's classes (the JDK's class-data sharing, AppCDS), made once per machine,
that the JVMs of local Spark sessions map instead of loading and verifying those classes again.

Measured here (2 cores, JDK 17.0.15, PySpark 4.0.5, fresh processes, medians of 5): a
``local[2]`` session's start plus a first ``count()`` took 8.1 s without, 5.8 s with an archive
(start 5.6 -> 3.8 s); start plus a first MLlib logistic regression 11.7 s without, 7.9 s with an
archive dumped after MLlib ran (155 MB; 97 MB after a ``count()`` only, and 8.7 s). Making it
costs once: the JVM that records (``-XX:+RecordDynamicDumpInfo``) starts ~3 s slower and runs
its first job ~2 s slower (16-17 s of CPU instead of 10-12), then the dump takes ~5 s.

Not chosen: a static archive (``java -Xshare:dump`` from a class list that the JVM writes at
nearly no cost, ``-XX:DumpLoadedClassList``) started faster still (3.9 s against 5.2 s, same
run) but took 27-30 s of a core to make, too long to wait for at the end of a session, and a
process left running to make it would outlive the pipeline.

A JVM that this process starts for a ``local[N]`` master, with Java 17 or newer and ``jcmd``
beside its ``java``:

- maps the archive if there is one (``-XX:SharedArchiveFile``); one the JVM turned down (a
  different JVM or classpath: it says nothing and goes on without it) is deleted, to be made
  again;
- else, if its caller will save it (``record``), records what it needs to, and
  :func:`save_classes`, called once the session's work is done (so that MLlib's classes are in
  it), has the JVM write the archive: to a temp file, renamed to its final name when whole. A
  failure is logged (debug) and not tried again for a day.

The archive's size is part of its name: a truncated archive would make the JVM die of SIGBUS
as it maps it (seen on JDK 17.0.15), so one whose size differs is deleted before any JVM sees
it. ``CAUCE_CLASS_ARCHIVE=off`` turns all this off.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cauce._util.files import cache_dir, fsync_dir
from cauce.errors import SpecError

__all__ = ["ENV", "ClassArchive", "class_archive", "save_classes"]

logger = logging.getLogger(__name__)

ENV = "CAUCE_CLASS_ARCHIVE"
_MODES = ("on", "off")
_DUMP_TIMEOUT = 60.0
#: After a failed dump, JVMs are not started to record again for this long.
_RETRY_AFTER = 24 * 3600.0
#: Archives of other keys (another Java, another PySpark) not used for this long are deleted.
_UNUSED = 30 * 24 * 3600.0
#: Temp files older than this are left-overs of a dump that was cut short (a timeout, a crash).
_STALE = 3600.0
#: Options of a user who manages class-data sharing: then cauce adds nothing.
_USERS_CDS = re.compile(r"-Xshare:|SharedArchiveFile|ArchiveClassesAtExit|RecordDynamicDumpInfo")
#: Settings and variables that change the JVM's classpath, which the archive must match.
_CLASSPATH_SETTINGS = ("spark.driver.extraClassPath",)
_CLASSPATH_VARS = ("SPARK_DIST_CLASSPATH", "SPARK_CONF_DIR", "HADOOP_CONF_DIR", "YARN_CONF_DIR")
#: The JVM's CDS warnings ("Skipping ...: Not linked", while it dumps) stay off the terminal.
_QUIET = "-Xlog:cds*=off"


def _mode(environ: Mapping[str, str]) -> str:
    value = environ.get(ENV, "").strip().lower() or "on"
    if value not in _MODES:
        raise SpecError(
            ENV,
            f"must be on or off, got {value!r}; on (the default) makes an archive of Spark's "
            "classes once per machine, for local Spark sessions to start faster; off never does",
        )
    return value


@dataclass(frozen=True)
class _Java:
    path: str  # the real path of the java binary
    version: str  # its full version (JAVA_RUNTIME_VERSION)
    major: int
    jcmd: str | None


def _java_binary(environ: Mapping[str, str]) -> str | None:
    """The ``java`` that Spark's launcher runs (``$JAVA_HOME/bin/java``, else ``java`` on the
    PATH), as a real path."""
    home = environ.get("JAVA_HOME")
    found = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return os.path.realpath(found) if found and os.path.isfile(found) else None


@functools.cache
def _java(path: str) -> _Java | None:
    """What is known of the JVM at ``path``: from its ``release`` file, else from the JVM."""
    fields: dict[str, str] = {}
    try:
        text = (Path(path).parent.parent / "release").read_text(encoding="utf-8")
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip().strip('"')
        version = fields.get("JAVA_RUNTIME_VERSION") or fields["JAVA_VERSION"]
        spec = fields["JAVA_VERSION"]
    except (OSError, KeyError):
        try:
            shown = subprocess.run(
                [path, "-XshowSettings:properties", "-version"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stderr
        except (OSError, subprocess.TimeoutExpired):
            return None
        props = dict(re.findall(r"^\s*([\w.]+) = (.*)$", shown, re.MULTILINE))
        version = props.get("java.runtime.version", "")
        spec = props.get("java.specification.version", "")
    major = re.match(r"(?:1\.)?(\d+)", spec)
    if not version or major is None:
        return None
    jcmd = os.path.join(os.path.dirname(path), "jcmd")
    return _Java(path, version, int(major.group(1)), jcmd if os.access(jcmd, os.X_OK) else None)


def _spark_jars() -> Path | None:
    try:
        from pyspark.find_spark_home import _find_spark_home

        jars = Path(_find_spark_home()) / "jars"  # type: ignore[no-untyped-call]
    except Exception:  # no pyspark, or no Spark home: PySpark will say so itself
        return None
    return jars if jars.is_dir() else None


def _key(java: _Java, jars: Path, settings: Mapping[str, str], environ: Mapping[str, str]) -> str:
    """What the archive depends on: the JVM and the classpath Spark's launcher gives it."""
    import pyspark

    listing = sorted((e.name, e.stat().st_size) for e in os.scandir(jars) if e.is_file())
    parts = [
        java.path,
        java.version,
        pyspark.__version__,
        str(jars),
        listing,
        [settings.get(k, "") for k in _CLASSPATH_SETTINGS],
        [environ.get(k, "") for k in _CLASSPATH_VARS],
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _option(text: str) -> str:
    """One JVM option as Spark's launcher splits ``extraJavaOptions`` (quotes, backslashes)."""
    if not re.search(r"[\s\"'\\]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class ClassArchive:
    """The archive for the JVM that this process is about to start: ``path`` to map, or, if it
    is None, the one to make in ``folder`` when the work is done (:func:`save_classes`)."""

    folder: Path
    key: str
    jcmd: str
    path: Path | None = None
    pid: int = 0
    jvm: Any = None
    #: The archive this process's JVM records for, until it is saved (one JVM per process).
    recording: ClassVar[ClassArchive | None] = None

    def java_options(self, current: str | None) -> str:
        """``spark.driver.extraJavaOptions``: the user's, then the archive's."""
        if self.path is not None:
            ours = [f"-XX:SharedArchiveFile={self.path}", "-Xshare:auto", _QUIET]
        else:
            ours = ["-XX:+RecordDynamicDumpInfo", _QUIET]
        return " ".join([*([current] if current else []), *map(_option, ours)])

    def started(self, session: Any) -> None:
        """The JVM runs: note its pid; delete the archive if it was turned down."""
        try:
            self.jvm = session.sparkContext._jvm
            self.pid = int(self.jvm.java.lang.ProcessHandle.current().pid())
        except Exception as exc:  # py4j: then nothing is checked, nor saved
            logger.debug("class archive: cannot read the JVM's pid: %s", exc)
            return
        if self.path is None:
            with _LOCK:
                ClassArchive.recording = self
        elif not _mapped(self.pid, self.path):
            logger.info("the JVM turned down the archive of Spark's classes %s: deleted", self.path)
            with contextlib.suppress(OSError):
                self.path.unlink()

    def save(self) -> None:
        started = time.monotonic()
        tmp = self.folder / f".{self.key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        failed = self.folder / f"{self.key}.failed"
        try:
            final, size = self._publish(tmp)
        except (OSError, subprocess.SubprocessError) as exc:
            logger.debug("class archive: cannot save Spark's classes: %s", exc)
            with contextlib.suppress(OSError):
                failed.touch()
            return
        finally:
            for left in (tmp, tmp.with_name(tmp.name + ".temp")):  # the JDK's own temp file
                with contextlib.suppress(OSError):
                    left.unlink()
        with contextlib.suppress(OSError):
            failed.unlink()
        logger.info(
            "saved Spark's classes for local sessions to start faster: %s (%d MB, %.1f s)",
            final,
            size >> 20,
            time.monotonic() - started,
        )

    def _publish(self, tmp: Path) -> tuple[Path, int]:
        """Dump to ``tmp``, flush it to disk, rename it to its final name (with its size)."""
        out = self._dump(tmp)
        size = tmp.stat().st_size if tmp.is_file() else 0
        if not size:
            raise OSError(f"jcmd wrote no archive: {out.strip()[-300:]!r}")
        with open(tmp, "rb") as file:
            os.fsync(file.fileno())
        final = self.folder / f"{self.key}-{size}.jsa"
        os.replace(tmp, final)
        fsync_dir(self.folder)
        return final, size

    def _dump(self, tmp: Path) -> str:
        """``jcmd PID VM.cds dynamic_dump TMP``; jcmd's output."""
        with _muted(self.jvm):
            done = subprocess.run(
                [self.jcmd, str(self.pid), "VM.cds", "dynamic_dump", str(tmp)],
                capture_output=True,
                text=True,
                timeout=_DUMP_TIMEOUT,
                check=False,
            )
        if done.returncode != 0:
            raise OSError(f"jcmd exited {done.returncode}: {(done.stdout + done.stderr)[-300:]!r}")
        return done.stdout


@contextlib.contextmanager
def _muted(jvm: Any) -> Iterator[None]:
    """The JVM's ``System.out`` (the terminal, unless Spark's log goes to a file) goes nowhere
    meanwhile: the JDK says "Dynamic dump to file ..." there."""
    try:
        system = jvm.java.lang.System
        before = system.out
        system.setOut(jvm.java.io.PrintStream(jvm.java.io.OutputStream.nullOutputStream()))
    except Exception as exc:  # py4j: the line shows, nothing else goes wrong
        logger.debug("class archive: cannot mute the JVM's output: %s", exc)
        yield
        return
    try:
        yield
    finally:
        try:
            system.setOut(before)
        except Exception as exc:  # py4j: the JVM is gone
            logger.debug("class archive: cannot restore the JVM's output: %s", exc)


_LOCK = threading.Lock()


def _mapped(pid: int, path: Path) -> bool:
    """Whether the JVM ``pid`` maps ``path`` (True where ``/proc`` does not say)."""
    real = os.path.realpath(path)
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
            return any(line.rstrip("\n").endswith(real) for line in maps)
    except OSError:
        return True


def _present(folder: Path, key: str) -> Path | None:
    """The archive for ``key``, if there is a whole one (the newest, if a race made two). Also
    tidies the folder: deletes archives of another size than their name says, the other ones of
    ``key``, those of other keys unused for ``_UNUSED`` (another Java or PySpark), old failure
    marks and temp files that a dump cut short left behind."""
    now = time.time()
    try:
        entries = [(e.name, Path(e.path), e.stat()) for e in os.scandir(folder)]
    except OSError:
        return None
    mine: list[tuple[float, Path]] = []
    old: list[Path] = []
    for name, path, stat in entries:
        age = now - stat.st_mtime
        if name.startswith(f"{key}-") and name.endswith(".jsa"):
            if str(stat.st_size) == name[len(key) + 1 : -len(".jsa")]:
                mine.append((stat.st_mtime, path))
            else:
                logger.info("deleting a damaged archive of Spark's classes: %s", path)
                old.append(path)
        elif (
            (name.startswith(".") and ".tmp" in name and age > _STALE)
            or (name.endswith(".failed") and age > _RETRY_AFTER)
            or (name.endswith(".jsa") and age > _UNUSED)
        ):
            old.append(path)
    mine.sort()
    old += [path for _, path in mine[:-1]]
    for path in old:
        with contextlib.suppress(OSError):
            path.unlink()
    if not mine:
        return None
    newest = mine[-1][1]
    with contextlib.suppress(OSError):
        os.utime(newest)  # in use: the tidying spares archives used within _UNUSED
    return newest


def class_archive(
    master: str, settings: Mapping[str, str], *, record: bool, environ: Mapping[str, str]
) -> ClassArchive | None:
    """The archive for a JVM this process is about to start for ``master`` with ``settings``:
    one to map, or (``record``) one to make; None when there is neither, or it cannot be used.
    Raises SpecError for a bad ``CAUCE_CLASS_ARCHIVE``."""
    if not master.startswith("local") or _mode(environ) == "off":
        return None
    if _USERS_CDS.search(settings.get("spark.driver.extraJavaOptions", "")):
        return None
    binary = _java_binary(environ)
    java = _java(binary) if binary else None
    jars = _spark_jars()
    if java is None or java.major < 17 or java.jcmd is None or jars is None:
        return None
    try:
        key = _key(java, jars, settings, environ)
    except OSError:
        return None
    folder = cache_dir("spark-classes", environ)
    path = _present(folder, key)
    if path is not None:
        return ClassArchive(folder, key, java.jcmd, path)
    if not record:
        return None
    with contextlib.suppress(OSError):
        if time.time() - (folder / f"{key}.failed").stat().st_mtime < _RETRY_AFTER:
            return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return ClassArchive(folder, key, java.jcmd)


def save_classes() -> None:
    """If this process's JVM records its classes for an archive (see :func:`class_archive`),
    have it write them now (a few seconds, once per machine). Never raises for a failure."""
    with _LOCK:
        archive, ClassArchive.recording = ClassArchive.recording, None
    if archive is not None:
        archive.save()
