"""Timing helpers for benchmarks and commands alike: warm-up then the median of repeated runs
(STYLE 18), a per-stage clock for the items of a run loop, medians with the run's provenance."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from .provenance import gemm_gflops, provenance

__all__ = ["StageClock", "measurement_environment", "gemm_gflops", "median_time",
           "summarize_timings", "synced", "timing_line"]


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


def synced(fn: Callable[[], object], device: torch.device | str = "cpu") -> Callable[[], object]:
    """``fn`` followed by a wait for the device's queued work (CUDA is asynchronous: without
    it a timing measures the launch, not the work); ``fn`` itself on the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return fn

    def run() -> object:
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return run


def measurement_environment(device: torch.device | str = "cpu") -> dict[str, object]:
    """What the figures were measured on, with the CPU's matrix-product rate at the time."""
    device = torch.device(device)
    env: dict[str, object] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_gemm_gflops": round(gemm_gflops(), 1),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    try:
        import numba

        env["numba"] = numba.__version__
        env["numba_threads"] = numba.get_num_threads()
    except ImportError:  # pragma: no cover
        env["numba"] = None
    return env


class StageClock:
    """Seconds per named stage of one item, and the item's wall time: the time since the last
    :meth:`lap` (for an image in ``sppnet detect``: waiting for its proposals included)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self._stages: dict[str, float] = {}
        self._name, self._t = "", 0.0

    def begin(self) -> None:
        """Start a new item here (the time since the last lap is not its own)."""
        self._last, self._stages = time.perf_counter(), {}

    def start(self, name: str) -> None:
        self._name, self._t = name, time.perf_counter()

    def stop(self) -> None:
        self._stages[self._name] = self._stages.get(self._name, 0.0) + (
            time.perf_counter() - self._t)

    def lap(self) -> dict[str, float]:
        """The stages since the last lap and ``wall``; starts the next item."""
        now = time.perf_counter()
        out = {**self._stages, "wall": now - self._last}
        self._last, self._stages = now, {}
        return out


def summarize_timings(per_item: list[dict[str, float]], skip_first: bool = True,
                      inputs: Iterable[str | Path] | None = None) -> dict:
    """Medians per key over items (the first left out as a warm-up when there are others), with
    the provenance of the run (``inputs``: the model files timed, recorded by digest)."""
    items = per_item[1:] if skip_first and len(per_item) > 1 else per_item
    keys = sorted({k for d in items for k in d})
    return {"images": len(items), "first_excluded": len(items) < len(per_item),
            "median": {k: statistics.median(d[k] for d in items if k in d) for k in keys},
            "environment": measurement_environment(), "provenance": provenance(inputs=inputs)}


def timing_line(summary: dict) -> str:
    """One printed line of :func:`summarize_timings`' medians, the wall time first."""
    m = dict(summary["median"])
    parts = [f"wall {m.pop('wall'):.3f}"] if "wall" in m else []
    windows = m.pop("windows", None)
    parts += [f"{k} {v:.3f}" for k, v in m.items() if k != "unique"]
    first = ", first excluded" if summary["first_excluded"] else ""
    extra = f"; {windows:.0f} windows" if windows is not None else ""
    return (f"seconds per image (median of {summary['images']}{first}{extra}): "
            + " | ".join(parts))
