"""``sppnet eval-coco``: the official COCO metrics (pycocotools) of detections against a COCO
instances JSON — ``eval-voc``'s sibling — with the VOC07 mAP of the same detections beside them.

    sppnet eval-coco --annotations GT.json --detections RESULTS.json --output-dir OUT

Detections: a COCO results list (``[{image_id, category_id, bbox [x, y, w, h], score}]``) or
``sppnet detect``'s ``detections.json`` (keys: image file stems; boxes continuous ``xyxy``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

from .args import add_output_args


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet eval-coco")
    p.add_argument("--annotations", type=Path, required=True, help="COCO instances JSON")
    p.add_argument("--detections", type=Path, required=True,
                   help="COCO results JSON (a list) or sppnet's detections.json")
    add_output_args(p, "replace an evaluation with other settings in OUTPUT_DIR")
    p.set_defaults(func=main)
    return p


def _from_results(results: list, ds, path: Path) -> dict:
    """A COCO results list -> ``{image_id: (xyxy, scores, names)}`` (for the VOC mAP)."""
    import numpy as np

    from ..data.coco import coco_categories, read_coco_json

    cats = coco_categories(read_coco_json(ds.root), ds.root)
    ours = {cid: i for i, cid in ds.coco_ids.items()}
    rows: dict = {}
    def number(v: object) -> bool:  # JSON numbers only: pycocotools reads the file as it is
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def whole(v: object) -> bool:  # an id: an integer, or a float holding one (1.0)
        return number(v) and float(v).is_integer()

    for n, r in enumerate(results):
        try:
            x, y, w, h = (float(v) for v in r["bbox"])
            img, cat, score = r["image_id"], r["category_id"], float(r["score"])
            typed = (all(number(v) for v in r["bbox"]) and number(r["score"])
                     and whole(img) and whole(cat))
            img, cat = int(img), int(cat)
        except (KeyError, TypeError, ValueError):
            typed = False
        if not typed:
            raise ValueError(f"--detections {path}: result {n} needs an integer image_id and "
                             f"category_id, a bbox of 4 numbers [x, y, w, h] and a number "
                             f"score, got {r!r}") from None
        if not all(math.isfinite(v) for v in (x, y, w, h, score)) or w < 0 or h < 0:
            raise ValueError(f"--detections {path}: result {n} has bbox {r['bbox']!r} and score "
                             f"{r['score']!r}; they must be finite, width and height >= 0")
        if cat not in cats:
            raise ValueError(f"--detections {path}: result {n} has category_id {cat!r}, which "
                             f"{ds.root} does not declare")
        if img not in ours:
            raise ValueError(f"--detections {path}: result {n} has image_id {img!r}, which "
                             f"is not in {ds.root}")
        rows.setdefault(ours[img], []).append(([x, y, x + w, y + h], score, cats[cat]))
    return {i: (np.array([b for b, _, _ in r]), np.array([s for _, s, _ in r]),
                [c for _, _, c in r]) for i, r in rows.items()}


def main(args: argparse.Namespace) -> int:
    from ..data.coco import load_coco, read_coco_json
    from ..evaluation.coco import detections_to_coco
    from ..evaluation.detections import read_detections_json
    from ..utils.run_dir import check_output_dir, claim_folder, command_settings

    check_output_dir(args.output_dir)
    gt = read_coco_json(args.annotations)
    ds = load_coco(args.annotations, need_images=False)
    if not args.detections.is_file():
        raise FileNotFoundError(f"--detections {args.detections} does not exist")
    try:
        raw = json.loads(args.detections.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--detections {args.detections} is not valid JSON: {e}") from None
    except RecursionError:
        raise ValueError(f"--detections {args.detections} is nested too deeply to be a "
                         "detections file") from None
    if not any(len(a.boxes) for a in ds):  # as eval-voc: the AP would be undefined
        raise ValueError(f"--annotations {args.annotations} holds no objects: the AP would be "
                         "undefined")
    category_ids = {c["name"]: int(c["id"]) for c in gt["categories"]}
    if isinstance(raw, list):
        results, dets = raw, _from_results(raw, ds, args.detections)
    else:
        dets = read_detections_json(args.detections)
        unknown = sorted({n for _, _, names in dets.values() for n in names} - set(category_ids))
        if unknown:
            raise ValueError(f"--detections {args.detections} names classes {unknown} that "
                             f"{args.annotations} does not declare")
        extra = sorted(set(dets) - set(ds.coco_ids))
        if extra:
            logging.warning("%d detected image id(s) are not in the annotations, ignored: %s",
                            len(extra), extra[:5])
        results = detections_to_coco(dets, ds.coco_ids, category_ids)
    with claim_folder(args.output_dir, "eval-coco", command_settings(args),
                      ("results.json", "cocoeval.txt"), args.force):
        return _evaluate(args, gt, ds, results, dets)


def _evaluate(args: argparse.Namespace, gt: dict, ds, results: list, dets: dict) -> int:
    from ..evaluation.coco import coco_eval, voc_map_of
    from ..utils.provenance import write_results

    coco = coco_eval(gt, results)
    voc = voc_map_of(dets, ds)
    out = {"coco": {k: v for k, v in coco.items() if k != "summary"},
           "voc07_mAP": voc["mAP"], "voc07_per_class_AP": voc["per_class_AP"],
           "images": len(ds), "detections": len(results),
           "note": "COCO: pycocotools COCOeval (bbox), 101-point, IoU .50:.95, no +1; VOC07: "
                   "11-point at IoU 0.5, continuous boxes, crowds as difficult"}
    write_results(args.output_dir / "results.json", out, {})
    (args.output_dir / "cocoeval.txt").write_text(coco["summary"])
    print(coco["summary"].rstrip())
    print(f"AP {100 * coco['AP']:.1f}  AP50 {100 * coco['AP50']:.1f}  AP75 "
          f"{100 * coco['AP75']:.1f}  |  VOC07 mAP {100 * voc['mAP']:.1f}  over {len(ds)} images;"
          f" wrote {args.output_dir}")
    return 0
