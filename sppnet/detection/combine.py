"""Model combination (SPP section 4.3): two detectors score the same windows; NMS on the union.

Shapes: R windows, K classes, M detections.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..ops import batched_nms
from .detector import Detections, SPPDetector

__all__ = ["combine_detections", "detect_combined"]


def combine_detections(dets: Sequence[Detections], nms_iou: float = 0.3,
                       max_dets: int = 100) -> Detections:
    """Per-class NMS over the union of several detectors' candidates of one image."""
    boxes = torch.cat([d.boxes for d in dets])
    scores = torch.cat([d.scores for d in dets])
    labels = torch.cat([d.labels for d in dets])
    keep = batched_nms(boxes, scores, labels, nms_iou)[:max_dets]
    return Detections(boxes[keep], scores[keep], labels[keep])


@torch.no_grad()
def detect_combined(detectors: Sequence[SPPDetector], image: np.ndarray,
                    boxes: torch.Tensor | np.ndarray, mode: str = "spp") -> Detections:
    """Every detector scores (and regresses) all windows with its own NMS turned off; then one
    per-class NMS at the first detector's threshold keeps the best ``max_dets`` of the union."""
    if not detectors:
        raise ValueError("detect_combined needs at least one detector")
    classes = detectors[0].classes
    for d in detectors[1:]:
        if d.classes != classes:
            raise ValueError(f"detectors disagree on classes: {classes} vs {d.classes}")
    boxes = torch.as_tensor(np.asarray(boxes, np.float32)).reshape(-1, 4)
    cands = []
    for d in detectors:
        pooled, inverse, _ = d.pooled(image, boxes, mode)
        scores = d.score_pooled(pooled)
        # every candidate of every detector, before NMS; the NMS runs once on the union
        cands.append(d.postprocess(pooled, boxes, scores, image.shape[:2], inverse=inverse,
                                   nms_iou=1.0, max_dets=len(boxes) * scores.shape[1]))
    first = detectors[0].settings
    return combine_detections(cands, first.nms_iou, first.max_dets)
