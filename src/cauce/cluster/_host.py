"""What GPUs this host has. Probing happens here and only when asked; CPUs and memory are
:mod:`cauce._util.machine`'s."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping

from cauce.errors import SpecError

__all__ = ["detect_gpus", "parse_gpu_list"]

logger = logging.getLogger(__name__)


#: What CUDA_VISIBLE_DEVICES takes: an index from 0, or a device's UUID.
_GPU_ID = re.compile(r"^(?:[0-9]{1,4}|(?:GPU|MIG)-[0-9A-Za-z/-]{1,80})$")


def parse_gpu_list(text: str, source: str = "CAUCE_GPUS") -> tuple[str, ...]:
    """``"0,1,2,3"`` -> ids; ``""`` or ``"none"`` -> no GPUs."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    ids = tuple(part.strip() for part in text.split(","))
    if any(not _GPU_ID.match(part) for part in ids) or len(set(ids)) != len(ids):
        raise SpecError(
            source,
            "must be a comma-separated list of distinct GPU ids like 0,1,2,3 (indexes from 0, "
            f"or GPU-/MIG- UUIDs as nvidia-smi -L shows them), got {text!r}",
        )
    return ids


def _nvml_gpus() -> tuple[str, ...] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            return tuple(str(i) for i in range(int(pynvml.nvmlDeviceGetCount())))
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # NVML raises its own error types; any of them means "no GPUs"
        logger.debug("NVML found no GPUs: %s", exc)
        return None


def _nvidia_smi_gpus() -> tuple[str, ...] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("nvidia-smi found no GPUs: %s", exc)
        return None
    return tuple(line.strip() for line in out.splitlines() if line.strip())


def detect_gpus(
    env: Mapping[str, str] | None = None, declared: str | None = None
) -> tuple[tuple[str, ...], str]:
    """GPU ids and where they came from: ``CAUCE_GPUS``, the config, NVML, nvidia-smi, none."""
    env = os.environ if env is None else env
    if "CAUCE_GPUS" in env:
        return parse_gpu_list(env["CAUCE_GPUS"]), "CAUCE_GPUS"
    if declared is not None:
        return parse_gpu_list(declared, "local.gpus"), "config"
    found = _nvml_gpus()
    if found is not None:
        return found, "NVML"
    found = _nvidia_smi_gpus()
    if found is not None:
        return found, "nvidia-smi"
    return (), "none found"
