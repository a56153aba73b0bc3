"""How close to the IoU 0.5 line a detector's best detections sit: a run's ``eval/detections.json``
against the test set's ground truth, written to ``<run>/eval_margin/results.json`` (which
collect_det.py copies with the run's other evaluations).

Per test image, the detection with the highest score (any class) and its best IoU (continuous
boxes) with that image's ground truth: how many are above 0.5 (a true positive at the top of
the image), and how many within 0.1 of the line: detections that a small change of features
or box regression can turn from true to false positive or back, each of which moves a
one-class AP on ~40 photos by points.

Usage: python docs/experiments/localization_margin.py --annotations DIR [--split IDS.txt] RUN...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from sppnet.data.voc import load_voc
from sppnet.ops import box_iou
from sppnet.utils.provenance import write_results


def margins(run: Path, annotations: Path, split: str | None) -> dict:
    dets = json.loads((run / "eval" / "detections.json").read_text())
    ds = load_voc(annotations, split, need_images=False)
    top_iou = []
    for ann in ds.annotations:
        d = dets.get(ann.image_id)
        if d is None or not d["scores"] or not len(ann.boxes):
            top_iou.append(0.0)
            continue
        best = int(np.argmax(d["scores"]))
        iou = box_iou(torch.tensor([d["boxes"][best]], dtype=torch.float32),
                      torch.from_numpy(ann.boxes))
        top_iou.append(float(iou.max()))
    t = np.array(top_iou)
    return {"images": len(t), "top_detection_iou_at_least_0.5": int((t >= 0.5).sum()),
            "top_detection_iou_0.4_to_0.6": int(((t >= 0.4) & (t < 0.6)).sum()),
            "top_detection_iou_median": float(np.median(t)), "top_detection_iou": top_iou}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotations", type=Path, required=True)
    ap.add_argument("--split")
    ap.add_argument("runs", type=Path, nargs="+")
    args = ap.parse_args()
    for run in args.runs:
        if not (run / "eval" / "detections.json").is_file():
            sys.exit(f"localization_margin: {run} has no eval/detections.json")
        res = margins(run, args.annotations, args.split)
        write_results(run / "eval_margin" / "results.json", {**res, "run": str(run)}, {},
                      inputs=[run / "eval" / "detections.json"])
        print(f"{run}: top detection IoU >= 0.5 on {res['top_detection_iou_at_least_0.5']} of "
              f"{res['images']} photos, within 0.1 of 0.5 on "
              f"{res['top_detection_iou_0.4_to_0.6']}")


if __name__ == "__main__":
    main()
