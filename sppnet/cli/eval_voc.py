"""``sppnet eval-voc``: VOC AP of detections against VOC XML annotations.

Detections: a folder of devkit result files (``comp4_det_test_<class>.txt``, lines
``image_id score x1 y1 x2 y2`` in 1-based pixels) or ``sppnet detect``'s ``detections.json``.
VOC07 11-point AP by default (``--all-point`` for VOC2010+), IoU >= 0.5 with the devkit's +1
pixel widths (``--no-plus-one`` for continuous coordinates).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet eval-voc")
    p.add_argument("--annotations", type=Path, required=True,
                   help="VOC-format folder (devkit layout or image + XML)")
    p.add_argument("--split", help="ImageSets/Main/<split>.txt of --annotations")
    p.add_argument("--detections", type=Path, required=True,
                   help="folder of devkit result files, or detections.json")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--classes", help="class names (default: from the annotations)")
    p.add_argument("--iou", type=float, default=0.5)
    p.add_argument("--all-point", action="store_true", help="all-point AP instead of 11-point")
    p.add_argument("--no-plus-one", action="store_true",
                   help="continuous boxes: no +1 in widths (the +1 is right for VOC pixels)")
    p.add_argument("--prefix", default="comp4_det_test_", help="result file prefix")
    p.set_defaults(func=main)
    return p


def _load_detections(path: Path, classes: list[str], prefix: str) -> dict:
    """``{image_id: (boxes in devkit pixels, scores, labels)}``."""
    import numpy as np

    from ..evaluation.voc import read_devkit_results, to_devkit

    out: dict = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"--detections {path} is not valid JSON: {e}") from None
        for image_id, d in data.items():
            boxes = to_devkit(np.asarray(d["boxes"], np.float64).reshape(-1, 4))
            out[image_id] = (boxes, np.asarray(d["scores"], np.float64),
                             np.asarray(d["labels"], np.int64))
        return out
    if not path.is_dir():
        raise FileNotFoundError(f"--detections {path} does not exist")
    found = 0
    rows: dict = {}
    for c, name in enumerate(classes):
        f = path / f"{prefix}{name}.txt"
        if not f.is_file():
            logging.warning("no %s: class %r has no detections", f, name)
            continue
        found += 1
        for image_id, score, box in read_devkit_results(f):
            rows.setdefault(image_id, []).append((box, score, c))
    if not found:
        raise FileNotFoundError(f"--detections {path} holds no {prefix}<class>.txt files for "
                                f"classes {classes[:5]}")
    for image_id, r in rows.items():
        out[image_id] = (np.array([x[0] for x in r]), np.array([x[1] for x in r]),
                         np.array([x[2] for x in r]))
    return out


def main(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data.voc import load_voc
    from ..evaluation.voc import VOCEvaluator, plot_pr_curves, to_devkit

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    classes = args.classes.split(",") if args.classes else None
    ds = load_voc(args.annotations, args.split, classes)
    dets = _load_detections(args.detections, ds.classes, args.prefix)
    plus_one = not args.no_plus_one
    ev = VOCEvaluator(ds.classes, args.iou, not args.all_point, plus_one)
    known = {a.image_id for a in ds}
    extra = sorted(set(dets) - known)
    if extra:
        logging.warning("%d detected image id(s) are not in the annotations, ignored: %s",
                        len(extra), extra[:5])
    empty = (np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    for a in ds:
        gt = to_devkit(a.boxes) if plus_one else a.boxes
        b, s, lab = dets.get(a.image_id, empty)
        ev.process(a.image_id, gt, a.labels, a.difficult, b, s, lab)
    res = ev.evaluate()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.json").write_text(json.dumps(res, indent=2))
    plot_pr_curves(ev.class_results(), args.output_dir / "pr_curves.png",
                   f"VOC{'07 11-point' if not args.all_point else ' all-point'} AP")
    for name, ap in res["per_class_AP"].items():
        print(f"  {name:>16}: AP {100 * ap:.1f}")
    print(f"mAP {100 * res['mAP']:.2f} over {res['images']} images; wrote {args.output_dir}")
    return 0
