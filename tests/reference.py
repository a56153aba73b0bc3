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


def matlab_colon(a: float, d: float, b: float) -> list[float]:
    """MATLAB's ``a:d:b``, element by element as its colon operator builds it: the first half
    ``a + k*d``, the second half ``b - (n-k)*d`` from the end point, the middle ``(a+b)/2``
    (so ``0:0.1:1`` holds 0.30000000000000004 and exactly 0.6 and 0.7)."""
    n = round((b - a) / d)
    out = []
    for k in range(n + 1):
        if 2 * k < n:
            out.append(a + k * d)
        elif 2 * k == n:
            out.append((a + b) / 2)
        else:
            out.append(b - (n - k) * d)
    return out


def ref_voc_ap(gts: dict, dets: list, iou: float = 0.5, plus_one: bool = True,
               use_07: bool = True) -> float:
    """One class's AP as the VOC devkit's ``VOCevaldet.m`` computes it, written out as loops.

    ``gts``: ``{image_id: [(box, difficult), ...]}``; ``dets``: ``[(image_id, score, box)]``
    in input order (ties in score keep it: MATLAB's sort is stable). Boxes ``(x1, y1, x2, y2)``;
    ``plus_one``: the devkit's pixel widths ``x2 - x1 + 1``. NaN when the class has no
    (non-difficult) object."""
    one = 1.0 if plus_one else 0.0
    npos = sum(1 for objs in gts.values() for _, diff in objs if not diff)
    if npos == 0:
        return float("nan")
    order = sorted(range(len(dets)), key=lambda j: -dets[j][1])  # stable
    taken = {i: [False] * len(objs) for i, objs in gts.items()}
    tp, fp = [], []
    for j in order:
        image_id, _, b = dets[j]
        best, best_k = -math.inf, -1
        for k, (g, _) in enumerate(gts.get(image_id, [])):
            iw = min(b[2], g[2]) - max(b[0], g[0]) + one
            ih = min(b[3], g[3]) - max(b[1], g[1]) + one
            if iw > 0 and ih > 0:
                inter = iw * ih
                union = ((b[2] - b[0] + one) * (b[3] - b[1] + one)
                         + (g[2] - g[0] + one) * (g[3] - g[1] + one) - inter)
                if inter / union > best:
                    best, best_k = inter / union, k
        if best >= iou:
            if gts[image_id][best_k][1]:
                continue  # a difficult object: neither true nor false positive
            if not taken[image_id][best_k]:
                taken[image_id][best_k] = True
                tp.append(1)
                fp.append(0)
            else:
                tp.append(0)
                fp.append(1)
        else:
            tp.append(0)
            fp.append(1)
    rec, prec, ctp, cfp = [], [], 0, 0
    for t, f in zip(tp, fp):
        ctp, cfp = ctp + t, cfp + f
        rec.append(ctp / npos)
        prec.append(ctp / (ctp + cfp))
    if use_07:
        total = 0.0
        for t in matlab_colon(0, 0.1, 1):
            total += max([p for r, p in zip(rec, prec) if r >= t], default=0.0) / 11
        return total
    mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1)
               if mrec[i + 1] != mrec[i])


def ref_voc_map(gts: dict, dets: dict, classes, **kw) -> float:
    """The mean over classes (with objects) of :func:`ref_voc_ap`. ``gts``: ``{image_id:
    [(box, label, difficult)]}``, ``dets``: ``{image_id: [(box, label, score)]}`` (images in
    order; boxes in the convention ``kw`` selects)."""
    aps = []
    for c in range(len(classes)):
        g = {i: [(b, d) for b, lab, d in objs if lab == c] for i, objs in gts.items()}
        d = [(i, s, b) for i, objs in dets.items() for b, lab, s in objs if lab == c]
        ap = ref_voc_ap(g, d, **kw)
        if not math.isnan(ap):
            aps.append(ap)
    return sum(aps) / len(aps)
