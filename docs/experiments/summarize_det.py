"""Print the detection tables of docs/detection.md from the runs of detection.sh.

Usage: python docs/experiments/summarize_det.py [RUNS_DIR]   (default runs/det)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = [("pool5 SVM", "pool5-svm"), ("ftfc7 SVM", "fc7-svm"), ("ftfc7 SVM + bb", "fc7-svm+bbox"),
        ("ft softmax", "softmax"), ("ft softmax + bb", "softmax+bbox")]
COLUMNS = [  # (header, run, eval folder)
    ("fruit, MobileNetV2, 1 scale", "fruit_mnv2", "eval"),
    ("fruit, MobileNetV2, 5 scales", "fruit_mnv2", "eval_5scale"),
    ("fruit (first 20), MobileNetV2, SPP", "fruit_mnv2", "eval_first20"),
    ("fruit (first 20), MobileNetV2, R-CNN way", "fruit_mnv2", "eval_rcnn_first20"),
    ("fruit, ZF-5 ¼ (Caltech), 1 scale", "fruit_zf5", "eval"),
    ("fruit, ZF-5 ¼, R-CNN way", "fruit_zf5", "eval_rcnn"),
    ("raccoon, MobileNetV2, 1 scale", "raccoon_mnv2", "eval"),
    ("raccoon, MobileNetV2, 5 scales", "raccoon_mnv2", "eval_5scale"),
]
FC_COLUMNS = [("fp32", "eval"), ("int8", "eval_int8"), ("SVD 256/256", "eval_svd")]


def load(runs: Path, run: str, folder: str) -> dict | None:
    p = runs / run / folder / "results.json"
    return json.loads(p.read_text()) if p.is_file() else None


def main() -> None:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/det")
    cols = [(h, load(runs, r, f)) for h, r, f in COLUMNS]
    cols = [(h, r) for h, r in cols if r is not None]
    print("| VOC07 mAP (%) | " + " | ".join(h for h, _ in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, key in ROWS:
        cells = [f"{100 * r['variants'][key]['mAP']:.1f}" if key in r["variants"] else "—"
                 for _, r in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n| seconds per image (median) | " + " | ".join(h for h, _ in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for stage in ("conv", "pool", "fc", "nms", "total"):
        cells = [f"{r['seconds_per_image_median'][stage]:.3f}" for _, r in cols]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    print("| windows per image (mean) | " + " | ".join(
        f"{r['windows_per_image_mean']:.0f}" for _, r in cols) + " |")
    fc = [(h, load(runs, "fruit_mnv2", f)) for h, f in FC_COLUMNS]
    fc = [(h, r) for h, r in fc if r is not None]
    if fc:
        print("\n| fruit, MobileNetV2, 1 scale: fc6/fc7 as | " + " | ".join(h for h, _ in fc)
              + " |")
        print("|---|" + "---|" * len(fc))
        for name, key in ROWS[1:]:
            print(f"| {name} mAP | " + " | ".join(
                f"{100 * r['variants'][key]['mAP']:.1f}" for _, r in fc) + " |")
        print("| fc seconds/image | " + " | ".join(
            f"{r['seconds_per_image_median']['fc']:.3f}" for _, r in fc) + " |")


if __name__ == "__main__":
    main()
