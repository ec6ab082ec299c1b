"""``models:/NAME/VERSION`` and ``models:/NAME@ALIAS``: a registered model version's files,
downloaded once to a cache folder on this host (``CACHE/mlflow/SERVER/NAME/VERSION``, SERVER
a short hash of the registry's URI, so that two registries do not mix; an alias is resolved
to its version first, so that moving it serves the new version). The registry is the one at
``$MLFLOW_TRACKING_URI`` (``$MLFLOW_REGISTRY_URI`` if set). What the folder holds is checked
by the caller: cauce serves its own model format only, never a pickle.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cauce._util.files import swap_dir
from cauce._util.remote import is_registry_uri
from cauce.errors import SpecError, TrackingError

__all__ = ["is_registry_uri", "registry_model_dir"]

_URI_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))/?$")


def registry_model_dir(
    uri: str, cache: Path, marker: str, environ: Mapping[str, str] | None = None
) -> Path:
    """The local folder of the model version ``uri`` names, holding ``marker``."""
    env = os.environ if environ is None else environ
    match = _URI_RE.match(uri)
    if match is None:
        raise TrackingError(
            f"{uri}: not a registry URI; give models:/NAME/VERSION or models:/NAME@ALIAS"
        )
    if match["name"] in (".", ".."):
        raise TrackingError(f"{uri}: {match['name']!r} is not a model name; give the model's name")
    server = env.get("MLFLOW_REGISTRY_URI") or env.get("MLFLOW_TRACKING_URI")
    if not server:
        raise TrackingError(
            f"{uri}: set MLFLOW_TRACKING_URI to the MLflow server whose registry holds it"
        )
    from cauce.tracking._client import load_mlflow, unsupported_uri

    mlflow = load_mlflow()
    try:
        client = mlflow.MlflowClient(tracking_uri=server, registry_uri=server)
    except Exception as exc:
        if not unsupported_uri(exc):
            raise
        raise SpecError(
            "",
            f"{uri}: MLflow has no model registry at {server!r} ($MLFLOW_REGISTRY_URI or "
            "$MLFLOW_TRACKING_URI): give an http(s):// server, a file: folder or a database "
            "URI (sqlite://, postgresql://, mysql://, mssql://)",
        ) from None
    name = match["name"]
    try:
        if match["alias"]:
            version = str(client.get_model_version_by_alias(name, match["alias"]).version)
        else:
            version = str(client.get_model_version(name, match["version"]).version)
        source = client.get_model_version_download_uri(name, version)
    except mlflow.exceptions.MlflowException as exc:
        first = (str(exc).strip().splitlines() or ["not found"])[0][:300]
        raise TrackingError(f"{uri}: not found in the registry at {server}: {first}") from None
    registry = hashlib.sha256(server.encode()).hexdigest()[:12]
    folder = cache / "mlflow" / registry / name / version
    if (folder / marker).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=folder.parent))
    try:
        try:
            got = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=str(tmp), tracking_uri=server
                )
            )
        except Exception as exc:  # the artifact store's own errors (HTTP, files)
            raise TrackingError(
                f"{uri}: version {version} cannot be downloaded from {source}: {exc}"
            ) from exc
        if not (got / marker).is_file():
            raise TrackingError(
                f"{uri}: version {version} ({source}) has no {marker}: not a cauce model "
                "(cauce serves its own format only; save it with cauce.serve.save_model)"
            )
        swap_dir(got, folder)  # tmp itself or a folder in it
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
