"""Loading a model to serve it: torch threads from the CPUs this process may use, warm-up."""

from __future__ import annotations

import logging
import math
import time

from cauce._util.machine import available_cpus
from cauce.serve._format import LoadedModel, load_model
from cauce.serve.api import ServeSettings

__all__ = ["default_threads", "load_for_serving"]

log = logging.getLogger(__name__)


def default_threads(workers: int) -> int:
    """Torch threads per worker: its share of the CPUs less one, left to the HTTP event loop.

    An intra-op team that needs every core stalls at each barrier as soon as the event loop
    (or anything else) takes one of them; on a busy 2-core host that made a 2 ms model take
    30 ms. One thread fewer than the share costs little when the host is idle.
    """
    return max(1, math.ceil(available_cpus()) // workers - 1)


def load_for_serving(settings: ServeSettings) -> LoadedModel:
    """Set torch's threads, load the model, warm it up. Call it on the thread that will run it."""
    import torch

    threads = settings.threads or default_threads(settings.workers)
    torch.set_num_threads(threads)
    started = time.perf_counter()
    model = load_model(settings.model_dir, device=settings.device)
    model.warmup(settings.max_batch_size)
    log.info(
        "model %s ready in %.2f s (%d torch threads)",
        model.name,
        time.perf_counter() - started,
        threads,
    )
    return model
