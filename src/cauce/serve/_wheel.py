"""The cauce that an image installs when this one does not come from a package index.

A cauce imported from a source checkout (an editable or development install: ``src/cauce``
beside a ``pyproject.toml``) has a version that no index serves, so ``pip install
cauce[serve]==0.1.0`` would fail in the image. :func:`checkout_wheel` builds a wheel of that
checkout (``pip wheel --no-deps``, in a copy of its ``pyproject.toml``, ``README.md`` and
``src/``, so the checkout gets no ``build/`` folder) and caches it by the hash of those files in
``$XDG_CACHE_HOME/cauce/wheels`` (``~/.cache/cauce/wheels``): packaging again from the same
sources takes no new build.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cauce._util.files import cache_dir
from cauce.serve.api import ServeError

__all__ = ["checkout_root", "checkout_wheel", "wheel_into"]

log = logging.getLogger(__name__)

_FILES = ("pyproject.toml", "README.md")


def checkout_root() -> Path | None:
    """The source checkout cauce is imported from, or None for an install from an index."""
    import cauce

    root = Path(cauce.__file__).resolve().parent.parent.parent
    if (root / "pyproject.toml").is_file() and (root / "src" / "cauce").is_dir():
        return root
    return None


def _sources(root: Path) -> list[Path]:
    found = [root / name for name in _FILES if (root / name).is_file()]
    for path in sorted((root / "src").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
            found.append(path)
    return found


def checkout_wheel(root: Path) -> Path:
    """A wheel of the checkout at ``root`` (built once per content); ServeError if pip fails."""
    sources = _sources(root)
    digest = hashlib.sha256()
    for path in sources:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    folder = cache_dir("wheels") / digest.hexdigest()[:16]
    wheels = sorted(folder.glob("cauce-*.whl")) if folder.is_dir() else []
    if wheels:
        return wheels[0]
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cauce-wheel-") as tmp:
        copy = Path(tmp) / "src-copy"
        for path in sources:
            target = copy / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        out = Path(tmp) / "out"
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        log.info("building a wheel of the checkout %s", root)
        done = subprocess.run(
            [*command, "--quiet", "--wheel-dir", str(out), str(copy)],
            capture_output=True,
            text=True,
            check=False,
        )
        built = sorted(out.glob("cauce-*.whl"))
        if done.returncode != 0 or not built:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise ServeError(
                f"cannot build a wheel of the checkout {root} for the image: {tail[0]}; "
                "give --cauce-requirement (a version on an index, or a URL) instead"
            )
        staged = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
        shutil.move(str(built[0]), staged / built[0].name)
        try:
            staged.rename(folder)
        except OSError:  # another build of the same sources got there first
            shutil.rmtree(staged, ignore_errors=True)
    return sorted(folder.glob("cauce-*.whl"))[0]


def wheel_into(folder: Path) -> Path | None:
    """A wheel of the checkout cauce runs from, copied into ``folder``; None when cauce comes
    from a package index (the image then pip-installs the same version from it)."""
    root = checkout_root()
    if root is None:
        return None
    built = checkout_wheel(root)
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(built, folder / built.name))
