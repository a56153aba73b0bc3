"""Slow, obvious references written from the formulas (float64 Python loops)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ref_bins(length: int, n: int) -> list[tuple[int, int]]:
    # paper appendix: [floor(i * a / n), ceil((i + 1) * a / n))
    return [(math.floor(i * length / n), math.ceil((i + 1) * length / n)) for i in range(n)]


def ref_spp(x: Tensor, levels, mode: str = "max") -> Tensor:
    """(N, C, H, W) -> (N, C * sum(n*n)), level by level, each (C, n, n) row-major."""
    n_img, n_ch, h, w = x.shape
    xd = x.double()
    out = []
    for b in range(n_img):
        row = []
        for n in levels:
            level = torch.empty(n_ch, n, n, dtype=torch.float64)
            for i, (ys, ye) in enumerate(ref_bins(h, n)):
                for j, (xs, xe) in enumerate(ref_bins(w, n)):
                    patch = xd[b, :, ys:ye, xs:xe].reshape(n_ch, -1)
                    level[:, i, j] = patch.amax(1) if mode == "max" else patch.mean(1)
            row.append(level.reshape(-1))
        out.append(torch.cat(row))
    return torch.stack(out)


def ref_project(box, stride: float, map_size, offset: float = 0.0) -> list[int]:
    h, w = map_size
    out = []
    for lo_v, hi_v, size in ((box[0], box[2], w), (box[1], box[3], h)):
        lo = math.floor((lo_v - offset) / stride) + 1
        hi = math.ceil((hi_v - offset) / stride) - 1
        if lo > hi:
            lo = hi = math.floor((lo + hi) / 2)
        out.append((min(max(lo, 0), size - 1), min(max(hi, 0), size - 1)))
    (x0, x1), (y0, y1) = out
    return [x0, y0, x1, y1]


def ref_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_nms(boxes: Tensor, scores: Tensor, thr: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    bl = boxes.double().tolist()
    keep: list[int] = []
    for i in order:
        if all(ref_iou(bl[i], bl[k]) <= thr for k in keep):
            keep.append(i)
    return keep
