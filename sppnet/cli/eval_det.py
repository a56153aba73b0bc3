"""``sppnet eval-det``: evaluate a trained detector on a labelled VOC-format folder.

Every scoring variant (SVMs per layer, with/without box regression, softmax) from one pass of
the run loop (:mod:`sppnet.detection.run`); ``--mode rcnn`` runs the conv net per warped window
instead (the paper's baseline); ``--scales`` and ``--fc`` change the test-time scales and the
fc6/fc7 approximation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..utils.config import int_arg
from .args import add_inference_args, add_output_args, load_detectors


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet eval-det")
    p.add_argument("--model", type=Path, required=True, help="detector folder")
    p.add_argument("--data", required=True, help="labelled VOC-format folder or COCO .json")
    p.add_argument("--images", help="COCO --data: the folder its file_names are in")
    p.add_argument("--split", help="ImageSets/Main/<split>.txt of --data")
    add_output_args(p, "replace an evaluation with other settings in OUTPUT_DIR")
    p.add_argument("--cache-dir", type=Path, help="proposal cache (default OUTPUT_DIR/cache)")
    p.add_argument("--max-images", type=int_arg(1), default=None,
                   help="evaluate the first N only")
    p.add_argument("--all-point", action="store_true", help="all-point AP instead of 11-point")
    add_inference_args(p, score=False)
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    from ..data.datasets import load_dataset
    from ..detection.detector_files import detector_inputs, training_seeds
    from ..detection.evaluate import EVAL_OUTPUTS, evaluate_detector
    from ..detection.proposal_cache import get_proposals, load_proposal_file
    from ..utils.device import resolve_device
    from ..utils.run_dir import check_cache_dir, check_output_dir, claim_folder, command_settings

    resolve_device(args.device)  # before anything else: a missing GPU is one line
    check_output_dir(args.output_dir)
    if args.cache_dir:
        check_cache_dir(args.cache_dir, output_dir=args.output_dir)
    det = load_detectors(args, [args.model])[0]
    ds = load_dataset(args.data, args.split or "", tuple(det.classes), args.images or "")
    if not any((~a.difficult).any() for a in ds):  # before any proposal is computed
        raise ValueError(f"--data {args.data}: its {len(ds)} image(s) hold no (non-difficult) "
                         f"object of the detector's classes {det.classes}: the mAP would be "
                         "undefined")
    # given windows are read before the folder is claimed (--force deletes earlier results)
    given = load_proposal_file(args.proposals, [a.image_id for a in ds]) if args.proposals \
        else None
    with claim_folder(args.output_dir, "eval-det", command_settings(args, ("cache_dir",)),
                      EVAL_OUTPUTS, args.force):
        # the windows the detector was trained with (detector.json), unless overridden
        props = given if given is not None else get_proposals(
            ds, det.settings.proposal, args.cache_dir or args.output_dir / "cache", "",
            args.workers, not args.no_progress)
        res = evaluate_detector(det, ds, props, args.output_dir, det.settings.mode,
                                not args.no_progress, use_07_metric=not args.all_point,
                                max_images=args.max_images, seeds=training_seeds(args.model),
                                inputs=detector_inputs(args.model, det.spec))
    for name, v in res["variants"].items():
        print(f"  {name:>16}: mAP {100 * v['mAP']:.1f}")
    sec = res["seconds_per_image_median"]
    print("seconds/image (median): " + ", ".join(f"{k} {v:.3f}" for k, v in sec.items()))
    print(f"wrote {args.output_dir / 'results.json'}")
    return 0
