"""``sppnet detect``: run a trained detector on an image or a folder of images.

Writes ``detections.json`` (``boxes``/``scores``/``labels`` per image, torchvision-style, 0-based
continuous pixels), VOC devkit result files (``devkit/comp4_det_test_<class>.txt``, 1-based) and
a PNG per image with the boxes drawn, to ``--output-dir``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..data.voc import IMAGE_EXTS


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet detect")
    p.add_argument("images", type=Path, help="an image file or a folder of images")
    p.add_argument("--model", type=Path, required=True, action="append",
                   help="detector folder (train-det's OUTPUT_DIR/model); give it twice to "
                        "combine two detectors (NMS on the union of their windows)")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--proposals", help="precomputed windows (.npz per image id or one .npz); "
                                       "default: Selective Search, cached in OUTPUT_DIR/cache")
    p.add_argument("--mode", default="spp", choices=("spp", "rcnn"),
                   help="spp: conv once per image (default); rcnn: conv per warped window")
    p.add_argument("--scales", help="override the detector's scales, e.g. 480,576,688,864,1200")
    p.add_argument("--score", choices=("svm", "softmax"), help="override the scoring")
    p.add_argument("--fc", help="fc6/fc7 at test time: fp32 (default), int8 or svd:R6,R7")
    p.add_argument("--thresh", type=float, default=None,
                   help="draw detections scoring above this (default 0 for SVMs, 0.5 softmax)")
    p.add_argument("--workers", type=int, default=2, help="proposal worker processes")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=main)
    return p


def _images(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in IMAGE_EXTS)
        if found:
            return found
        raise FileNotFoundError(f"{path} holds no images ({', '.join(IMAGE_EXTS[:5])})")
    raise FileNotFoundError(f"{path} does not exist")


def main(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from ..data.decode import ImageDecodeError, decode_image
    from ..detection.combine import detect_combined
    from ..detection.detector import SPPDetector
    from ..detection.proposals import ProposalConfig, iter_proposals, load_proposal_file
    from ..detection.visualize import draw_detections
    from ..evaluation.voc import write_devkit_results

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    detectors = [SPPDetector.load(m) for m in args.model]
    for det in detectors:
        if args.scales:
            det.settings.scales = tuple(int(s) for s in args.scales.split(","))
        if args.score:
            det.settings.score = args.score
        if args.fc:
            det.settings.fc = args.fc
    det = detectors[0]
    paths = _images(args.images)
    out = args.output_dir
    (out / "images").mkdir(parents=True, exist_ok=True)
    if args.proposals:
        given = load_proposal_file(args.proposals, [p.stem for p in paths])
        stream = ((str(p), given[p.stem], "") for p in paths)
    else:  # Selective Search in worker processes, overlapped with the network below
        stream = iter_proposals(paths, out / "cache" / "proposals", ProposalConfig(),
                                args.workers)
    thresh = args.thresh if args.thresh is not None else (
        0.5 if det.settings.score == "softmax" else 0.0)
    results, devkit, failed = {}, [], {}
    for path, boxes, err in tqdm(stream, total=len(paths), desc=f"detect ({args.mode})",
                                 disable=args.no_progress, unit="img"):
        p = Path(path)
        if boxes is None:
            logging.warning("no proposals for %s: %s", p, err)
            failed[str(p)] = f"no proposals: {err}"
            continue
        try:
            image = decode_image(p)
        except ImageDecodeError as e:
            logging.warning("skipping %s", e)
            failed[str(p)] = str(e)
            continue
        if len(detectors) > 1:
            d = detect_combined(detectors, image, boxes, args.mode)
        else:
            d = det.detect(image, boxes, args.mode)
        results[p.stem] = {**d.to_json(det.classes), "image": str(p),
                           "seconds": {k: round(v, 4) for k, v in d.timings.items()}}
        devkit.append((p.stem, d.boxes.numpy(), d.scores.numpy(), d.labels.numpy()))
        draw_detections(image, d.boxes.numpy(), d.scores.numpy(), d.labels.numpy(),
                        det.classes, thresh).save(out / "images" / f"{p.stem}.png")
    (out / "detections.json").write_text(json.dumps(results, indent=1))
    write_devkit_results(out / "devkit", det.classes, devkit)
    if failed:
        (out / "failed.json").write_text(json.dumps(failed, indent=1))
    n = sum(int((np.array(r["scores"]) > thresh).sum()) for r in results.values())
    print(f"{len(results)} image(s), {n} detection(s) above {thresh}; wrote {out}"
          + (f"; {len(failed)} failed (failed.json)" if failed else ""))
    return 0 if results or not paths else 1
