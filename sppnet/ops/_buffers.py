"""Recycled CPU output buffers for the large results of window pooling.

A fresh 100 MB CPU tensor costs ~20 ms here before a single value is written: the allocator
maps new pages, and the kernel's first write to each page faults and zeroes it. That is as
long as the pooling itself. Detection calls the pooling once per image with outputs of similar
size, so this module keeps the memory of outputs the caller has dropped and hands it out again,
as PyTorch's CUDA caching allocator does for GPU memory.

A buffer returns to the pool only when nothing references it any more: the tensor is made with
``torch.from_numpy`` from an array view, and a ``weakref.finalize`` on that view gives the
memory back when the tensor's storage is freed. Values are never shared between two live
tensors. At most :data:`MAX_CACHED_BYTES` (``SPPNET_BUFFER_CACHE_MB``, default 512; 0 turns the
pool off) are kept, and only outputs of at least :data:`MIN_BYTES` are pooled.
:func:`empty_cache` releases everything the pool holds.
"""

from __future__ import annotations

import os
import threading
import weakref

import numpy as np
import torch
from torch import Tensor

__all__ = ["pooled_empty", "empty_cache", "cached_bytes", "set_cache_limit"]

MIN_BYTES = 16 << 20  # smaller outputs allocate fast enough
MAX_CACHED_BYTES = int(float(os.environ.get("SPPNET_BUFFER_CACHE_MB", "512")) * (1 << 20))

_lock = threading.Lock()
_free: list[np.ndarray] = []  # uint8 blocks no live tensor uses


def cached_bytes() -> int:
    """Bytes the pool holds for reuse (not in use by any tensor)."""
    with _lock:
        return sum(b.nbytes for b in _free)


def empty_cache() -> None:
    """Release every block the pool holds."""
    with _lock:
        _free.clear()


def set_cache_limit(nbytes: int) -> int:
    """Keep at most ``nbytes`` for reuse (0 turns the pool off); returns the previous limit."""
    global MAX_CACHED_BYTES
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    with _lock:
        old, MAX_CACHED_BYTES = MAX_CACHED_BYTES, int(nbytes)
        while _free and sum(b.nbytes for b in _free) > MAX_CACHED_BYTES:
            _free.pop()
    return old


def _give_back(block: np.ndarray) -> None:
    with _lock:
        held = sum(b.nbytes for b in _free)
        if held + block.nbytes <= MAX_CACHED_BYTES:
            _free.append(block)


def _take(nbytes: int) -> np.ndarray | None:
    """The smallest free block of at least ``nbytes`` and at most twice that (no large block
    is pinned under a small tensor)."""
    with _lock:
        fits = [i for i, b in enumerate(_free) if nbytes <= b.nbytes <= 2 * nbytes]
        if not fits:
            return None
        i = min(fits, key=lambda k: _free[k].nbytes)
        return _free.pop(i)


def pooled_empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An uninitialised contiguous CPU tensor, from the pool when it holds a fitting block."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    nbytes = int(np.prod(shape)) * itemsize
    if nbytes < MIN_BYTES or MAX_CACHED_BYTES <= 0:
        return torch.empty(shape, dtype=dtype)
    block = _take(nbytes)
    if block is None:
        block = np.empty(nbytes, dtype=np.uint8)
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    view = block[:nbytes].view(np_dtype).reshape(shape)
    weakref.finalize(view, _give_back, block)
    return torch.from_numpy(view)
