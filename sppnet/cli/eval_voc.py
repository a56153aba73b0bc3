"""``sppnet eval-voc``: VOC AP of detections against VOC XML annotations.

Detections: a folder of devkit result files (``comp4_det_test_<class>.txt``, lines
``image_id score x1 y1 x2 y2`` in 1-based pixels) or ``sppnet detect``'s ``detections.json``.
VOC07 11-point AP by default (``--all-point`` for VOC2010+), IoU >= 0.5 with the devkit's +1
pixel widths (``--no-plus-one`` for continuous coordinates).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..utils.config import names_arg, number_arg
from .args import add_output_args


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet eval-voc")
    p.add_argument("--annotations", type=Path, required=True,
                   help="VOC-format folder (devkit layout or image + XML)")
    p.add_argument("--split", help="ImageSets/Main/<split>.txt of --annotations")
    p.add_argument("--detections", type=Path, required=True,
                   help="folder of devkit result files, or detections.json")
    add_output_args(p, "replace an evaluation with other settings in OUTPUT_DIR")
    p.add_argument("--classes", type=names_arg(),
                   help="class names, in the detector's label order (default: the names in the "
                        "annotations and the detections)")
    p.add_argument("--iou", type=number_arg(0, 1, lo_open=True), default=0.5)
    p.add_argument("--all-point", action="store_true", help="all-point AP instead of 11-point")
    p.add_argument("--no-plus-one", action="store_true",
                   help="continuous boxes: no +1 in widths (the +1 is right for VOC pixels)")
    p.add_argument("--prefix", default="comp4_det_test_", help="result file prefix")
    p.set_defaults(func=main)
    return p


def _load_detections(path: Path, classes: list[str] | None, prefix: str,
                     candidates: list[str]) -> dict:
    """``{image_id: (boxes continuous xyxy, scores, class names)}`` from ``detections.json``
    or a folder of devkit files (for the classes in ``classes`` or else ``candidates``)."""
    import numpy as np

    from ..evaluation.detections import read_detections_json
    from ..evaluation.voc import class_file_name, from_devkit, read_devkit_results

    if path.is_file():
        return read_detections_json(path, classes)
    if not path.is_dir():
        raise FileNotFoundError(f"--detections {path} does not exist")
    rows: dict = {}
    found = 0
    for name in classes or candidates:
        f = path / class_file_name(prefix, name)
        if not f.is_file():
            logging.warning("no %s: class %r has no detections", f, name)
            continue
        found += 1
        for image_id, score, box in read_devkit_results(f):
            rows.setdefault(image_id, []).append((box, score, name))
    if not found:
        raise FileNotFoundError(f"--detections {path} holds no {prefix}<class>.txt files for "
                                f"classes {(classes or candidates)[:5]}")
    return {i: (from_devkit(np.array([x[0] for x in r])), np.array([x[1] for x in r]),
                [x[2] for x in r]) for i, r in rows.items()}


def main(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data.voc import load_voc
    from ..evaluation.voc import VOCEvaluator, to_devkit
    from ..utils.run_dir import check_output_dir, claim_folder, command_settings

    check_output_dir(args.output_dir)
    given = list(args.classes) if args.classes else None
    ann = load_voc(args.annotations, args.split, given, need_images=False)
    dets = _load_detections(args.detections, given, args.prefix, ann.found_classes)
    # the evaluated classes: --classes, or every class in the annotations or the detections;
    # labels map by name, so a class absent from the test folder cannot shift the others
    det_names = sorted({n for _, _, names in dets.values() for n in names})
    classes = given or sorted(set(ann.found_classes) | set(det_names))
    unknown = sorted(set(det_names) - set(classes))
    if unknown:
        raise ValueError(f"--detections name classes {unknown} that are not in --classes "
                         f"{classes}")
    ds = ann if given else load_voc(args.annotations, args.split, classes, need_images=False)
    if not any((~a.difficult).any() for a in ds):
        raise ValueError(f"--annotations {args.annotations}: its {len(ds)} image(s) hold no "
                         f"(non-difficult) object of the classes {classes}: the mAP would be "
                         "undefined")
    index = {c: k for k, c in enumerate(classes)}
    plus_one = not args.no_plus_one
    ev = VOCEvaluator(classes, args.iou, not args.all_point, plus_one)
    known = {a.image_id for a in ds}
    extra = sorted(set(dets) - known)
    if extra:
        logging.warning("%d detected image id(s) are not in the annotations, ignored: %s",
                        len(extra), extra[:5])
    empty = (np.zeros((0, 4)), np.zeros(0), [])
    for a in ds:
        b, s, names = dets.get(a.image_id, empty)
        conv = to_devkit if plus_one else (lambda x: np.asarray(x, np.float64))
        ev.process(a.image_id, conv(a.boxes), a.labels, a.difficult, conv(b), s,
                   np.array([index[n] for n in names], np.int64))
    with claim_folder(args.output_dir, "eval-voc", command_settings(args),
                      ("results.json", "pr_curves.png"), args.force):
        _write(args, ev, classes)
    return 0


def _write(args: argparse.Namespace, ev, classes: list[str]) -> None:
    from ..evaluation.voc import plot_pr_curves
    from ..utils.provenance import write_results

    res = ev.evaluate()
    absent = [c for c in classes if res["positives"][c] == 0]
    if absent:
        logging.warning("classes with no objects in the annotations (AP undefined, left out of "
                        "the mean): %s", absent)
    res["classes"] = classes
    write_results(args.output_dir / "results.json", res, {})
    plot_pr_curves(ev.class_results(), args.output_dir / "pr_curves.png",
                   f"VOC{'07 11-point' if not args.all_point else ' all-point'} AP")
    for name, ap in res["per_class_AP"].items():
        print(f"  {name:>16}: AP {100 * ap:.1f}")
    print(f"mAP {100 * res['mAP']:.2f} over {res['images']} images; wrote {args.output_dir}")
