"""TorchScript helpers: the deprecation warning, example inputs, and checked model outputs."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from cauce.serve._spec import ModelSpec
from cauce.serve.api import DATATYPES, ServeError, TensorSpec

__all__ = ["check_outputs", "example_inputs_for", "outputs_of", "quiet_jit"]


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """torch 2.13 deprecates TorchScript (for torch.export) but still supports it: say it once
    in the docs, not at every save and load. Only that warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        yield


def _example(spec: TensorSpec, rows: int) -> npt.NDArray[Any]:
    shape = [rows, *(1 if d == -1 else d for d in spec.shape[1:])]
    return np.zeros(shape, dtype=DATATYPES[spec.datatype])


def example_inputs_for(spec: ModelSpec, rows: int) -> dict[str, npt.NDArray[Any]]:
    """Zeros of the declared shapes (code 0 is valid for every categorical column)."""
    return {t.name: _example(t, rows) for t in spec.inputs}


def check_outputs(spec: ModelSpec, compiled: Any) -> None:
    """Run the model on 2 rows of zeros; its outputs must be the declared ones."""
    import torch

    try:
        with torch.inference_mode():
            args = [torch.from_numpy(a) for a in example_inputs_for(spec, 2).values()]
            raw = compiled(*args)
        outputs_of(spec, raw)
    except ServeError:
        raise
    except Exception as exc:
        raise ServeError(
            f"model {spec.name!r} fails on inputs of the declared shapes "
            f"({', '.join(f'{t.name} {t.datatype} {list(t.shape)}' for t in spec.inputs)}): {exc}"
        ) from exc


def outputs_of(spec: ModelSpec, raw: Any) -> dict[str, npt.NDArray[Any]]:
    import torch

    if isinstance(raw, torch.Tensor):
        raw = (raw,)
    if isinstance(raw, dict):
        values = [raw.get(t.name) for t in spec.outputs]
    elif isinstance(raw, tuple | list) and len(raw) == len(spec.outputs):
        values = list(raw)
    else:
        raise ServeError(
            f"model {spec.name!r} returned {type(raw).__name__}; expected a tensor, a tuple of "
            f"{len(spec.outputs)} or a dict with {[t.name for t in spec.outputs]}"
        )
    out: dict[str, npt.NDArray[Any]] = {}
    for t, value in zip(spec.outputs, values, strict=True):
        if not isinstance(value, torch.Tensor):
            raise ServeError(f"model {spec.name!r}: output {t.name!r} is not a tensor")
        arr = value.detach().cpu().numpy()
        dims_ok = arr.ndim == len(t.shape) and all(
            want in (-1, got) for want, got in zip(t.shape[1:], arr.shape[1:], strict=True)
        )
        if not dims_ok:
            raise ServeError(
                f"model {spec.name!r}: output {t.name!r} has shape {list(arr.shape)}, "
                f"declared {list(t.shape)}"
            )
        want = np.dtype(DATATYPES[t.datatype])
        out[t.name] = arr if arr.dtype == want else arr.astype(want)
    return out
