"""The scales a detector computes conv maps at, and the scale set chosen from the data.

Shapes: G ground-truth boxes, S scales.

A scale is the shorter side an image is resized to before the conv trunk (paper section 4.2:
688 for 1 scale, {480, 576, 688, 864, 1200} for 5; at test time each window is pooled at the
scale where its area is closest to 224^2, the size the network was trained on). Those values
suit VOC photos, whose objects are small in a ~500 x 375 frame. On a set whose objects fill the
photo (raccoon: a median box of 0.83 of the shorter side) every scale of the paper's set makes
them several times larger than 224^2, and no window finds its scale. :func:`auto_scales`
applies the paper's own rule to the training boxes instead: it picks the scale that brings the
median ground-truth box to 224^2 (1 scale), or a geometric set around it that reaches both the
small and the large objects (several scales).

This module imports no torch (configs read its constants).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["SINGLE_SCALE", "FIVE_SCALES", "MAX_LONG_SIDE", "TARGET_AREA", "MIN_SCALE",
           "PAPER_SCALE_STEP", "AUTO_QUANTILES", "scaled_sizes", "ideal_scales", "auto_scales",
           "scale_summary"]

SINGLE_SCALE = (688,)  # paper section 4.2: shorter side 688 for 1-scale detection
FIVE_SCALES = (480, 576, 688, 864, 1200)  # paper section 4.2: the 5-scale set
# The paper's scales are for ordinary photos (VOC: ~500 x 375, so 1200 gives a 1600-px long
# side). A 20000 x 20 strip at shorter side 688 would be 688,000 px long (5 GiB of conv maps):
# the longer side is capped here, and such an image is scaled by the cap instead.
MAX_LONG_SIDE = 2000
TARGET_AREA = 224 * 224  # a window is pooled at the scale where its area is closest to this
MIN_SCALE = 32  # the smallest shorter side a detector accepts (2 cells of a stride-16 map)
# the paper's 5 scales step by (1200 / 480) ** (1/4) ~ 1.257 on average: a chosen set is at
# least this far apart, so that several scales never collapse onto one
PAPER_SCALE_STEP = (FIVE_SCALES[-1] / FIVE_SCALES[0]) ** (1 / (len(FIVE_SCALES) - 1))
# a multi-scale set spans at least the middle 80% of the boxes' ideal scales
AUTO_QUANTILES = (10.0, 90.0)


def scaled_sizes(image_size: tuple[int, int], scales: Sequence[int],
                 max_long_side: int | None = None) -> list[tuple[int, int]]:
    """``(H, W)`` of the image resized so its shorter side is each ``s`` (aspect kept), the
    longer side capped at ``max_long_side`` (default :data:`MAX_LONG_SIDE`)."""
    h, w = image_size
    cap = MAX_LONG_SIDE if max_long_side is None else max_long_side
    out = []
    for s in scales:
        f = min(s / min(h, w), cap / max(h, w))
        out.append((max(1, round(h * f)), max(1, round(w * f))))
    return out


def ideal_scales(boxes: Iterable[tuple[tuple[int, int], np.ndarray]]) -> np.ndarray:
    """The shorter side at which each box would have area :data:`TARGET_AREA`.

    Args:
        boxes: ``(image_size (H, W), boxes (G, 4) xyxy)`` per image.
    Returns:
        ndarray[G] (boxes of zero area are left out).
    """
    out = []
    for (h, w), b in boxes:
        b = np.asarray(b, np.float64).reshape(-1, 4)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        area = area[np.isfinite(area) & (area > 0)]
        out.append(np.sqrt(TARGET_AREA / area) * min(h, w))
    return np.concatenate(out) if out else np.zeros(0)


def auto_scales(boxes: Iterable[tuple[tuple[int, int], np.ndarray]], n: int) -> tuple[int, ...]:
    """``n`` scales chosen from ground-truth boxes by the paper's rule (module docstring).

    1 scale: the median of the boxes' ideal scales (:func:`ideal_scales`). ``n`` scales: a
    geometric sequence from the 10th to the 90th percentile of the ideal scales, widened
    around the median to at least :data:`PAPER_SCALE_STEP` between neighbours. Every scale is
    rounded and kept within ``[MIN_SCALE, MAX_LONG_SIDE]``; scales that round to the same value
    are kept once.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of scales to choose must be an integer >= 1, got {n!r}")
    s = ideal_scales(boxes)
    if len(s) == 0:
        raise ValueError("cannot choose scales from the data: the training set has no "
                         "ground-truth box of non-zero area; give --scales explicitly")
    median = float(np.median(s))
    if n == 1:
        chosen = [median]
    else:
        lo, hi = (float(q) for q in np.percentile(s, AUTO_QUANTILES))
        half = PAPER_SCALE_STEP ** ((n - 1) / 2)
        lo, hi = min(lo, median / half), max(hi, median * half)
        chosen = [lo * (hi / lo) ** (j / (n - 1)) for j in range(n)]
    clipped = [min(max(round(c), MIN_SCALE), MAX_LONG_SIDE) for c in chosen]
    return tuple(sorted(set(clipped)))


def scale_summary(scales: Sequence[int], boxes: Iterable[tuple[tuple[int, int], np.ndarray]]
                  ) -> str:
    """One line: how large the median box comes out at each scale (1.0 = 224^2)."""
    s = ideal_scales(boxes)
    if not len(s):
        return ""
    median = float(np.median(s))
    parts = [f"{sc}: x{sc / median:.2f}" for sc in scales]
    return (f"median ground-truth box at 224^2 needs shorter side {median:.0f}; its linear size "
            f"relative to 224 at each scale: {', '.join(parts)}")
