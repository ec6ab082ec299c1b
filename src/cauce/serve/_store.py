"""Model folders in an object store or another fsspec URI (``s3://bucket/models/flights``).

Writing: the folder is made on this host, then its files are uploaded, ``cauce-model.json`` last
(the model's marker: a reader takes no folder without it, and checks the archive's sha256
against it); the old marker goes first when a model is replaced. Reading: the folder is copied
to a cache on this host, ``$CAUCE_HOME/cache/models/<hash of its cauce-model.json>``, once;
serving then loads the local copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cauce._util.files import swap_dir
from cauce._util.remote import is_registry_uri, is_uri, url_to_fs
from cauce.serve._spec import SPEC_FILE, spec_from_json
from cauce.serve.api import ModelFormatError, ServeError, SettingsError

__all__ = ["local_model_dir", "upload_model"]

log = logging.getLogger(__name__)


def _store(uri: str) -> tuple[Any, str]:
    """The filesystem of ``uri`` and the path in it; an unknown scheme, or one whose fsspec
    package is missing, is a refusal naming the fix."""
    try:
        return url_to_fs(uri)
    except ImportError as exc:  # fsspec's own message names the package: "install gcsfs"
        raise SettingsError(f"{uri}: {exc} (pip install it into this environment)") from None
    except ValueError as exc:  # "Protocol not known: ftp2"
        raise SettingsError(
            f"{uri}: {exc}; give a local folder or a URI of a supported store "
            "(s3://, gs://, hdfs://, file://)"
        ) from None


def _unreachable(uri: str, exc: Exception, verb: str = "read") -> ServeError:
    """A store's own error (botocore's NoCredentialsError, a connection refused...)."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return ServeError(
        f"{uri}: cannot be {verb}: {type(exc).__name__}: {first} "
        "(check the store's address and this host's credentials for it)"
    )


def upload_model(folder: Path, uri: str) -> None:
    """Publish the model folder ``folder`` (complete, on this host) at ``uri``."""
    fs, root = _store(uri)
    try:
        fs.invalidate_cache(root)
        if fs.exists(f"{root}/{SPEC_FILE}"):
            fs.rm_file(f"{root}/{SPEC_FILE}")  # the old model is no longer complete
        for path in sorted(folder.iterdir()):
            if path.name != SPEC_FILE and path.is_file():
                fs.put_file(str(path), f"{root}/{path.name}")
        fs.put_file(str(folder / SPEC_FILE), f"{root}/{SPEC_FILE}")  # the commit
    except OSError as exc:
        raise ModelFormatError(uri, f"cannot be written: {exc}") from exc
    except Exception as exc:  # the store's own errors (botocore's are no OSError)
        raise _unreachable(uri, exc, "written") from exc


def local_model_dir(model_dir: str | Path) -> Path:
    """``model_dir`` itself when it is a local folder; a local copy of it when it is a URI, or
    a version of MLflow's model registry (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``)."""
    if is_registry_uri(model_dir):
        # Only then: the tracking and history packages need SQLAlchemy, a model server not.
        from cauce.history import cauce_home
        from cauce.tracking import registry_model_dir

        return registry_model_dir(str(model_dir), cauce_home() / "cache" / "models", SPEC_FILE)
    if not is_uri(model_dir):
        return Path(model_dir)
    uri = str(model_dir)
    fs, root = _store(uri)
    try:
        fs.invalidate_cache(root)
        text = fs.cat_file(f"{root}/{SPEC_FILE}")
    except FileNotFoundError:
        raise ModelFormatError(
            f"{uri.rstrip('/')}/{SPEC_FILE}", "is missing: not a cauce model folder"
        ) from None
    except OSError as exc:
        raise ModelFormatError(uri, f"cannot be read: {exc}") from exc
    except Exception as exc:  # the store's own errors (botocore's are no OSError)
        raise _unreachable(uri, exc) from exc
    try:
        spec = spec_from_json(json.loads(text), f"{uri}/{SPEC_FILE}")
    except ValueError as exc:
        raise ModelFormatError(f"{uri}/{SPEC_FILE}", f"is not valid JSON: {exc}") from None
    from cauce.history import cauce_home

    cache = cauce_home() / "cache" / "models" / hashlib.sha256(text).hexdigest()[:32]
    if (cache / SPEC_FILE).is_file() and (cache / SPEC_FILE).read_bytes() == text:
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", suffix=".tmp", dir=cache.parent))
    try:
        try:
            fs.get_file(f"{root}/{spec.model_file}", str(tmp / spec.model_file))
        except FileNotFoundError:
            raise ModelFormatError(
                f"{uri}/{spec.model_file}", "is missing (named by model_file in cauce-model.json)"
            ) from None
        except OSError:
            raise  # this host's disk, or the store's reply: as it was before
        except Exception as exc:  # the store's own errors, as above
            raise _unreachable(uri, exc) from exc
        (tmp / SPEC_FILE).write_bytes(text)
        swap_dir(tmp, cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("copied model %s to %s", uri, cache)
    return cache
