"""COCO metrics with the official ``pycocotools`` (AP@[.5:.95], AP50, AP75, APs/m/l), and the
VOC07 mAP of the same detections against the same ground truth, side by side.

The two differ by design: COCOeval interpolates precision at 101 recall points, has no ``+1`` in
box sizes and averages over 10 IoU thresholds; VOC07 uses 11 points at IoU 0.5. Crowd objects
(``iscrowd``) are COCOeval's crowds and VOC's ``difficult`` objects.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from .voc import VOCEvaluator

__all__ = ["COCO_STATS", "coco_eval", "detections_to_coco", "voc_map_of"]

# COCOeval.stats, in its order
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
              "ARl")


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ValueError("COCO metrics need pycocotools: pip install pycocotools") from None
    return COCO, COCOeval


def detections_to_coco(dets: dict[str, tuple[np.ndarray, np.ndarray, Sequence[str]]],
                       coco_ids: dict[str, int], category_ids: dict[str, int]) -> list[dict]:
    """``{image_id: (boxes continuous xyxy, scores, class names)}`` -> COCO results
    (``image_id`` the COCO id from ``coco_ids``, ``bbox`` ``[x, y, w, h]``); images without a
    COCO id are left out."""
    out = []
    for image_id, (boxes, scores, names) in dets.items():
        if image_id not in coco_ids:
            continue
        for (x1, y1, x2, y2), s, n in zip(np.asarray(boxes, np.float64), scores, names):
            out.append({"image_id": coco_ids[image_id], "category_id": category_ids[n],
                        "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                        "score": float(s)})
    return out


def coco_eval(gt: dict, results: list[dict], image_ids: Sequence[int] | None = None) -> dict:
    """Run COCOeval (bbox) on a ground-truth dict and a results list (over ``image_ids`` only,
    when given); its printed table is returned under ``summary`` instead of going to stdout."""
    COCO, COCOeval = _pycocotools()
    with contextlib.redirect_stdout(io.StringIO()) as log:
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
            ev = COCOeval(coco_gt, coco_dt, "bbox")
            if image_ids is not None:
                ev.params.imgIds = sorted(int(i) for i in image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            stats = [float(v) for v in ev.stats]
        else:  # loadRes refuses an empty list; no detections score 0 everywhere there is truth
            stats = [0.0] * len(COCO_STATS)
    return {**dict(zip(COCO_STATS, stats)), "summary": log.getvalue()}


def voc_map_of(dets: dict[str, tuple[np.ndarray, np.ndarray, Sequence[str]]], ds: Any,
               use_07_metric: bool = True) -> dict:
    """VOC AP at IoU 0.5 of the same detections against a dataset (``classes`` and annotations
    with ``image_id``, ``boxes``, ``labels``, ``difficult``), continuous boxes (no ``+1``),
    crowds as ``difficult``."""
    ev = VOCEvaluator(ds.classes, 0.5, use_07_metric, plus_one=False)
    index = {c: k for k, c in enumerate(ds.classes)}
    empty = (np.zeros((0, 4)), np.zeros(0), [])
    for a in ds:
        b, s, names = dets.get(a.image_id, empty)
        ev.process(a.image_id, a.boxes, a.labels, a.difficult, b, s,
                   np.array([index[n] for n in names], np.int64))
    return ev.evaluate()

