"""The Dockerfile of ``cauce package``: python slim, torch, cauce (from an index, or a wheel of
the checkout in the context's ``wheels/``), the model under ``/models/NAME``, a user without
root, and ``cauce serve`` as the entry point."""

from __future__ import annotations

from cauce.serve._spec import ModelSpec

__all__ = ["dockerfile"]

_TORCH_VERSION = "2.13.0"


def dockerfile(
    spec: ModelSpec, *, port: int, device: str, cauce_requirement: str, wheel: str | None = None
) -> str:
    """``wheel``: the name of a cauce wheel in the context's ``wheels/``, installed (with the
    serve extra) in place of ``cauce_requirement``."""
    gpu_note = (
        "# The default torch wheel for Linux carries its CUDA libraries; the node needs the\n"
        "# NVIDIA driver and container toolkit (nvidia.com/gpu resources).\n"
        if device == "cuda"
        else "# For a smaller CPU-only image, pass --build-arg TORCH_PIP_ARGS='--index-url URL'\n"
        "# with the URL of a CPU-only torch wheel index.\n"
    )
    return (
        "# syntax=docker/dockerfile:1\n"
        f"# Serves model {spec.name!r} version {spec.version!r} with `cauce serve` "
        "(written by `cauce package`).\n"
        "ARG BASE_IMAGE=python:3.11-slim\n"
        "FROM ${BASE_IMAGE}\n"
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1\n"
        f"{gpu_note}"
        f"ARG TORCH_VERSION={_TORCH_VERSION}\n"
        'ARG TORCH_PIP_ARGS=""\n'
        f"{_install(cauce_requirement, wheel)}"
        "RUN useradd --create-home --uid 10001 cauce\n"
        f"COPY --chown=10001 model/ /models/{spec.name}/\n"
        "USER 10001\n"
        "ENV CAUCE_SERVE_HOST=0.0.0.0 \\\n"
        f"    CAUCE_SERVE_PORT={port} \\\n"
        f"    CAUCE_SERVE_DEVICE={device}\n"
        f"EXPOSE {port}\n"
        "STOPSIGNAL SIGTERM\n"
        f'ENTRYPOINT ["cauce", "serve", "/models/{spec.name}"]\n'
    )


def _install(cauce_requirement: str, wheel: str | None) -> str:
    torch = 'RUN pip install ${TORCH_PIP_ARGS} "torch==${TORCH_VERSION}" \\\n'
    if wheel is None:
        return (
            f'ARG CAUCE_REQUIREMENT="{cauce_requirement}"\n{torch}'
            ' && pip install "${CAUCE_REQUIREMENT}"\n'
        )
    return (
        "# cauce is built from its source checkout (no package index has this version)\n"
        f"COPY wheels/{wheel} /tmp/wheels/{wheel}\n{torch}"
        f' && pip install "/tmp/wheels/{wheel}[serve]" && rm -rf /tmp/wheels\n'
    )
