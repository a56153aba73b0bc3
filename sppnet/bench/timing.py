"""Timing helpers: warm-up, then the median of repeated runs (STYLE 18)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def environment() -> dict[str, object]:
    """What the figures were measured on."""
    env: dict[str, object] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    try:
        import numba

        env["numba"] = numba.__version__
        env["numba_threads"] = numba.get_num_threads()
    except ImportError:  # pragma: no cover
        env["numba"] = None
    return env
