"""Windows labelled against the ground truth (what fine-tuning, SVMs and regression train on).

Shapes: G ground-truth boxes, R windows (ground truth first, then proposals), K classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.voc import Annotation
from ..ops import box_iou

__all__ = ["WindowSet", "label_windows"]


@dataclass
class WindowSet:
    """One image's training windows.

    Attributes:
        boxes (ndarray[R, 4] float32): ground truth (non-difficult) first, then the proposals.
        n_gt: how many leading rows are ground truth.
        gt_label (ndarray[R] int64): class of the best-overlapping ground truth (-1 if none).
        max_iou (ndarray[R] float32): IoU with that ground truth.
        class_iou (ndarray[R, K] float32): best IoU with a ground truth of each class.
        gt_index (ndarray[R] int64): index (into the non-difficult gt rows) of that best match.
    """

    boxes: np.ndarray
    n_gt: int
    gt_label: np.ndarray
    max_iou: np.ndarray
    class_iou: np.ndarray
    gt_index: np.ndarray

    def flipped(self, width: int) -> WindowSet:
        b = self.boxes.copy()
        b[:, 0], b[:, 2] = width - self.boxes[:, 2], width - self.boxes[:, 0]
        return WindowSet(b, self.n_gt, self.gt_label, self.max_iou, self.class_iou,
                         self.gt_index)


# IoU is computed a block of windows at a time: memory linear in windows and ground truth
# (an XML listing 10,000 boxes made a 12,000 x 10,000 float64 matrix and its temporaries, 9 GB)
IOU_BLOCK = 1 << 20  # window x ground-truth pairs per block (8 MB of float64)


def label_windows(ann: Annotation, proposals: np.ndarray, num_classes: int) -> WindowSet:
    """Ground truth (difficult objects left out, as R-CNN does) + proposals, with overlaps.

    Memory is ``O(R * K + block)``, never ``O(R * G)``: the overlaps are computed for
    :data:`IOU_BLOCK` window x ground-truth pairs at a time, keeping each window's best match
    overall and per class."""
    keep = ~ann.difficult
    gt = ann.boxes[keep]
    gl = ann.labels[keep]
    boxes = np.concatenate([gt, np.asarray(proposals, np.float32).reshape(-1, 4)]).astype(
        np.float32)
    r = len(boxes)
    class_iou = np.zeros((r, num_classes), np.float32)
    if len(gt):
        gt_index = np.zeros(r, np.int64)
        max_iou = np.zeros(r, np.float32)
        gt_t = torch.from_numpy(gt).double()
        classes = [(k, torch.from_numpy(np.flatnonzero(gl == k))) for k in range(num_classes)
                   if (gl == k).any()]
        step = max(1, IOU_BLOCK // len(gt))
        for s in range(0, r, step):
            iou = box_iou(torch.from_numpy(boxes[s:s + step]).double(), gt_t)  # (b, G)
            best, arg = iou.max(1)
            gt_index[s:s + step] = arg.numpy()
            max_iou[s:s + step] = best.numpy()
            for k, cols in classes:
                class_iou[s:s + step, k] = iou[:, cols].max(1).values.numpy()
        gt_label = gl[gt_index].astype(np.int64)
    else:
        gt_index = np.full(r, -1, np.int64)
        max_iou = np.zeros(r, np.float32)
        gt_label = np.full(r, -1, np.int64)
    return WindowSet(boxes, len(gt), gt_label, max_iou, class_iou, gt_index)
