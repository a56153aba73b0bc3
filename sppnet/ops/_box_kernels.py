"""Compiled (numba) greedy NMS: the same arithmetic as the NumPy path in :mod:`.boxes`, one
pass over the remaining boxes per kept box without a Python-level step."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def nms_segments(b, starts, thr):  # pragma: no cover - compiled
    """:func:`nms_sorted` on each segment ``b[starts[s]:starts[s + 1]]`` (one category each,
    in visiting order); the kept rows (indices into ``b``), segment by segment."""
    n = b.shape[0]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    alive = np.ones(n, dtype=np.bool_)
    keep = np.empty(n, dtype=np.int64)
    k = 0
    for s in range(starts.shape[0] - 1):
        lo, hi = starts[s], starts[s + 1]
        for i in range(lo, hi):
            if not alive[i]:
                continue
            keep[k] = i
            k += 1
            x1, y1, x2, y2 = b[i, 0], b[i, 1], b[i, 2], b[i, 3]
            for j in range(i + 1, hi):
                if not alive[j]:
                    continue
                iw = min(x2, b[j, 2]) - max(x1, b[j, 0])
                ih = min(y2, b[j, 3]) - max(y1, b[j, 1])
                inter = max(iw, 0.0) * max(ih, 0.0)
                union = area[i] + area[j] - inter
                if union > 0 and inter / union > thr:
                    alive[j] = False
    return keep[:k]


@njit(cache=True)
def nms_sorted(b, thr):  # pragma: no cover - compiled
    """Kept rows of ``b (R, 4) float64``, already in visiting order (decreasing score): one
    segment of :func:`nms_segments`."""
    starts = np.empty(2, dtype=np.int64)
    starts[0] = 0
    starts[1] = b.shape[0]
    return nms_segments(b, starts, thr)
