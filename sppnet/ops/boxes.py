"""Box operations on ``xyxy`` boxes in continuous pixel coordinates (no VOC ``+1``).

Shapes: R (or M) boxes, each ``(x1, y1, x2, y2)`` with ``x2 >= x1`` and ``y2 >= y1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ._checks import check_boxes, check_image_size

try:
    from . import _box_kernels
except ImportError:  # pragma: no cover - exercised only without numba
    _box_kernels = None

__all__ = ["box_area", "box_iou", "clip_boxes", "nms", "batched_nms", "remove_small_boxes"]


def box_area(boxes: Tensor) -> Tensor:
    """Areas of ``boxes (Tensor[R, 4])`` as ``Tensor[R]``: ``(x2 - x1) * (y2 - y1)``."""
    check_boxes(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection over union, ``Tensor[R, M]``; 0 where the union is empty."""
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    # integer boxes are accepted (as by nms); half-precision areas overflow (65504 = 256 x 256
    # px), so the arithmetic is at least float32 and the result comes back in the input's dtype
    out_dtype = boxes1.dtype if boxes1.is_floating_point() else torch.float32
    work = torch.promote_types(torch.promote_types(boxes1.dtype, boxes2.dtype), torch.float32)
    boxes1, boxes2 = boxes1.to(work), boxes2.to(work)
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (R, M, 2)
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (R, M, 2)
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny),
                      torch.zeros_like(inter))
    return iou.to(out_dtype)


def clip_boxes(boxes: Tensor, image_size: Sequence[int]) -> Tensor:
    """Clip ``boxes (Tensor[R, 4])`` into an image of ``image_size = (H, W)``: x into
    ``[0, W]``, y into ``[0, H]`` (continuous coordinates)."""
    check_boxes(boxes)
    h, w = check_image_size(image_size)
    x = boxes[:, 0::2].clamp(0, w)
    y = boxes[:, 1::2].clamp(0, h)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of boxes whose width and height are both ``>= min_size``."""
    check_boxes(boxes)
    wh = boxes[:, 2:] - boxes[:, :2]
    return ((wh[:, 0] >= min_size) & (wh[:, 1] >= min_size)).nonzero().flatten()


def _check_scores(scores: object, n: int, name: str = "scores") -> Tensor:
    if not isinstance(scores, Tensor) or scores.shape != (n,):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"{name} must have shape ({n},) to match boxes, got {shape}")
    if n and not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{name} must be finite, got NaN/inf at index "
                         f"{int((~torch.isfinite(scores)).nonzero()[0, 0])}")
    return scores


def _check_threshold(iou_threshold: float) -> float:
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)) or not (
            0.0 <= float(iou_threshold) <= 1.0):
        raise ValueError(f"iou_threshold must be a number in [0, 1], got {iou_threshold!r}")
    return float(iou_threshold)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Boxes are visited in decreasing score (ties: lower index first); a box is suppressed when its
    IoU with an already kept box is **greater** than ``iou_threshold``.

    Args:
        boxes (Tensor[R, 4]): ``xyxy`` boxes.
        scores (Tensor[R]): their scores.
        iou_threshold: in ``[0, 1]`` (SPP-net / R-CNN test time: 0.3).

    Returns:
        LongTensor[K]: indices of the kept boxes, in decreasing score.
    """
    check_boxes(boxes)
    _check_scores(scores, boxes.shape[0])
    thr = _check_threshold(iou_threshold)
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if boxes.device.type != "cpu":
        return _nms_on_device(boxes, scores, thr)
    b = boxes.detach().to("cpu", torch.float64).numpy()
    order = np.argsort(-scores.detach().to("cpu", torch.float64).numpy(), kind="stable")
    b = np.ascontiguousarray(b[order])
    keep = _box_kernels.nms_sorted(b, thr) if _box_kernels is not None else _nms_sorted_numpy(
        b, thr)
    return torch.as_tensor(order[keep], dtype=torch.long, device=boxes.device)


def _nms_on_device(boxes: Tensor, scores: Tensor, thr: float) -> Tensor:
    """NMS for boxes on an accelerator (torchvision's CUDA NMS works the same way): the
    pairwise "IoU > thr" matrix of the score-sorted boxes is computed where the boxes are
    (float64, as the CPU kernel), and only the greedy sweep over it runs on the CPU."""
    order = torch.sort(scores.detach().double(), descending=True, stable=True).indices
    b = boxes.detach().double()[order]
    over = torch.triu(box_iou(b, b) > thr, diagonal=1).cpu().numpy()  # (R, R) bool
    keep = _sweep(over)
    return order[torch.as_tensor(keep, device=boxes.device)]


def _sweep(over: np.ndarray) -> np.ndarray:
    """Greedy NMS over a precomputed ``over[i, j]`` (box ``i`` suppresses a later ``j``)."""
    alive = np.ones(len(over), dtype=bool)
    keep = []
    for i in range(len(over)):
        if alive[i]:
            keep.append(i)
            alive &= ~over[i]
    return np.asarray(keep, dtype=np.int64)


def _nms_sorted_numpy(b: np.ndarray, thr: float) -> np.ndarray:
    """Kept rows of ``b (R, 4)`` in visiting order; the path without numba."""
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = (x2 - x1) * (y2 - y1)
    alive = np.ones(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):  # one vector step per kept box, not per pair
        if not alive[i]:
            continue
        keep.append(i)
        rest = np.nonzero(alive[i + 1:])[0] + i + 1
        if rest.size == 0:
            break
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        alive[rest[iou > thr]] = False
    return np.asarray(keep, dtype=np.int64)


def _batched_nms_compiled(boxes: Tensor, scores: Tensor, idxs: Tensor, thr: float) -> Tensor:
    """All categories in one compiled call: boxes sorted by (category, decreasing score,
    index), greedy NMS within each category's run, then the kept boxes by decreasing score —
    the same indices, in the same order, as one :func:`nms` per category."""
    s = -scores.detach().to(torch.float64).numpy()
    lab = idxs.detach().numpy()
    order = np.lexsort((np.arange(len(s)), s, lab))  # category, then -score, then index
    b = np.ascontiguousarray(boxes.detach().to(torch.float64).numpy()[order])
    bounds = np.flatnonzero(np.diff(lab[order])) + 1
    starts = np.concatenate([[0], bounds, [len(s)]]).astype(np.int64)
    kept = order[_box_kernels.nms_segments(b, starts, thr)]
    kept = kept[np.argsort(s[kept], kind="stable")]
    return torch.as_tensor(kept, dtype=torch.long)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category: boxes with different ``idxs`` never suppress each other.

    Returns:
        LongTensor[K]: kept indices, in decreasing score over all categories.
    """
    check_boxes(boxes)
    _check_scores(scores, boxes.shape[0])
    if not isinstance(idxs, Tensor) or idxs.shape != (boxes.shape[0],):
        shape = tuple(idxs.shape) if isinstance(idxs, Tensor) else type(idxs).__name__
        raise ValueError(f"idxs must have shape ({boxes.shape[0]},) to match boxes, got {shape}")
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if boxes.device.type == "cpu" and _box_kernels is not None:
        return _batched_nms_compiled(boxes, scores, idxs, _check_threshold(iou_threshold))
    return _batched_nms_loop(boxes, scores, idxs, iou_threshold)


def _batched_nms_loop(boxes: Tensor, scores: Tensor, idxs: Tensor,
                      iou_threshold: float) -> Tensor:
    """One :func:`nms` per category (the path without numba, and on a GPU)."""
    keep = []
    for c in torch.unique(idxs):
        sel = (idxs == c).nonzero().flatten()
        keep.append(sel[nms(boxes[sel], scores[sel], iou_threshold)])
    kept = torch.cat(keep)
    order = torch.as_tensor(
        np.argsort(-scores[kept].detach().to("cpu", torch.float64).numpy(), kind="stable"),
        device=kept.device)
    return kept[order]
