"""``sppnet eval-det``: evaluate a trained detector on a labelled VOC-format folder.

Every scoring variant (SVMs per layer, with/without box regression, softmax) from one pass;
``--mode rcnn`` runs the conv net per warped window instead (the paper's baseline);
``--scales`` and ``--fc`` change the test-time scales and the fc6/fc7 approximation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..detection.config import PROPOSERS
from ..utils.config import MAX_DETECTION_SIDE, MAX_WINDOWS, MAX_WORKERS, int_arg, ints_arg
from ..utils.device import DEVICE_HELP


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet eval-det")
    p.add_argument("--model", type=Path, required=True, help="detector folder")
    p.add_argument("--data", required=True, help="labelled VOC-format folder or COCO .json")
    p.add_argument("--images", help="COCO --data: the folder its file_names are in")
    p.add_argument("--split", help="ImageSets/Main/<split>.txt of --data")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--mode", choices=("spp", "rcnn"),
                   help="spp or rcnn (conv per warped window); default: the way the detector "
                        "was trained")
    p.add_argument("--scales", type=ints_arg(32, MAX_DETECTION_SIDE),
                   help="test scales, e.g. 688 or 480,576,688,864,1200")
    p.add_argument("--fc", help="fc6/fc7 at test time: fp32, int8 or svd:R6,R7")
    p.add_argument("--proposals", help="precomputed windows (.npz per image or one .npz)")
    p.add_argument("--cache-dir", type=Path, help="proposal cache (default OUTPUT_DIR/cache)")
    p.add_argument("--max-images", type=int_arg(1), default=None,
                   help="evaluate the first N only")
    p.add_argument("--workers", type=int_arg(0, MAX_WORKERS), default=2)
    p.add_argument("--all-point", action="store_true", help="all-point AP instead of 11-point")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + "; proposals stay on the CPU")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--proposer", choices=PROPOSERS,
                   help="override the detector's proposal method")
    p.add_argument("--ss-max-side", type=int_arg(16, MAX_DETECTION_SIDE),
                   help="override the detector's Selective Search longer side")
    p.add_argument("--max-proposals", type=int_arg(1, MAX_WINDOWS),
                   help="override the detector's windows per image")
    p.add_argument("--weights", type=Path,
                   help="the backbone's weight file (the TFLite file), when the path the "
                        "detector recorded does not exist here; checked against its hash")
    p.add_argument("--force", action="store_true",
                   help="replace an evaluation with other settings in OUTPUT_DIR")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    from ..data.datasets import load_dataset
    from ..detection.config import DetConfig
    from ..detection.detector import SPPDetector
    from ..detection.evaluate import EVAL_OUTPUTS, evaluate_detector
    from ..detection.proposal_cache import get_proposals
    from ..utils.device import resolve_device
    from ..utils.run_dir import check_cache_dir, check_output_dir, claim_folder, command_settings

    device = resolve_device(args.device)  # before anything else: a missing GPU is one line
    check_output_dir(args.output_dir)
    if args.cache_dir:
        check_cache_dir(args.cache_dir)
    det = SPPDetector.load(args.model, weights=args.weights).to(device)
    if args.scales:
        det.configure(scales=args.scales)
    if args.fc:
        det.configure(fc=args.fc)  # fails early on a bad spec
    ds = load_dataset(args.data, args.split or "", tuple(det.classes), args.images or "")
    if not any((~a.difficult).any() for a in ds):  # before any proposal is computed
        raise ValueError(f"--data {args.data}: its {len(ds)} image(s) hold no (non-difficult) "
                         f"object of the detector's classes {det.classes}: the mAP would be "
                         "undefined")
    if args.ss_max_side:
        det.configure(ss_max_side=args.ss_max_side)
    if args.max_proposals:
        det.configure(max_proposals=args.max_proposals)
    # the windows the detector was trained with (detector.json), unless overridden
    if args.proposer:
        det.configure(proposer=args.proposer)
    cfg = DetConfig(proposals=args.proposals or "", workers=args.workers,
                    proposer=det.settings.proposer,
                    ss_max_side=det.settings.ss_max_side,
                    max_proposals=det.settings.max_proposals)
    with claim_folder(args.output_dir, "eval-det", command_settings(args, ("cache_dir",)),
                      EVAL_OUTPUTS, args.force):
        props = get_proposals(ds, cfg, args.cache_dir or args.output_dir / "cache",
                              not args.no_progress)
        mode = args.mode or det.settings.mode
        res = evaluate_detector(det, ds, props, args.output_dir, mode, not args.no_progress,
                                use_07_metric=not args.all_point, max_images=args.max_images)
    for name, v in res["variants"].items():
        print(f"  {name:>16}: mAP {100 * v['mAP']:.1f}")
    sec = res["seconds_per_image_median"]
    print("seconds/image (median): " + ", ".join(f"{k} {v:.3f}" for k, v in sec.items()))
    print(f"wrote {args.output_dir / 'results.json'}")
    return 0
