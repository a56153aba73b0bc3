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

from ..data.decode import IMAGE_EXTENSIONS, is_image_file, list_images
from ..detection.config import PROPOSERS
from ..utils.config import (
    MAX_DETECTION_SIDE,
    MAX_WINDOWS,
    MAX_WORKERS,
    int_arg,
    ints_arg,
    number_arg,
)
from ..utils.device import DEVICE_HELP

FLUSH_EVERY = 20  # detections.json is rewritten (atomically) after this many images
# what detect writes; --force replaces them (its proposal cache, OUTPUT_DIR/cache, stays)
OUTPUTS = ("detections.json", "failed.json", "timing.json", "devkit", "images")


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet detect")
    p.add_argument("images", type=Path, help="an image file or a folder of images")
    p.add_argument("--model", type=Path, required=True, action="append",
                   help="detector folder (train-det's OUTPUT_DIR/model); give it twice to "
                        "combine two detectors (NMS on the union of their windows)")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--proposals", help="precomputed windows (.npz per image id or one .npz); "
                                       "default: Selective Search, cached in OUTPUT_DIR/cache")
    p.add_argument("--mode", choices=("spp", "rcnn"),
                   help="spp: conv once per image; rcnn: conv per warped window; default: the "
                        "way the (first) detector was trained")
    p.add_argument("--scales", type=ints_arg(32, MAX_DETECTION_SIDE),
                   help="override the detector's scales, e.g. 480,576,688,864,1200")
    p.add_argument("--score", choices=("svm", "softmax"), help="override the scoring")
    p.add_argument("--fc", help="fc6/fc7 at test time: fp32 (default), int8 or svd:R6,R7")
    p.add_argument("--thresh", type=number_arg(), default=None,
                   help="draw detections scoring above this (default 0 for SVMs, 0.5 softmax)")
    p.add_argument("--workers", type=int_arg(0, MAX_WORKERS), default=2,
                   help="proposal worker processes")
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
                   help="replace detections made with other settings in OUTPUT_DIR")
    p.set_defaults(func=main)
    return p


def _images(path: Path) -> list[Path]:
    if path.is_file():
        if not is_image_file(path):
            raise ValueError(f"{path} is not an image file ({', '.join(IMAGE_EXTENSIONS)})")
        return [path]
    if path.is_dir():
        found = list_images(path)
        if found:
            return found
        raise FileNotFoundError(f"{path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    raise FileNotFoundError(f"{path} does not exist")


def image_ids(paths: list[Path]) -> list[str]:
    """One id per image: the file stem (the devkit's id), or the whole file name where two
    files share a stem (``x.jpg`` and ``x.png``) — said in a warning."""
    from collections import Counter

    stems = Counter(p.stem for p in paths)
    clash = sorted(s for s, n in stems.items() if n > 1)
    if clash:
        logging.warning("%d file stem(s) name more than one image (%s); those images are "
                        "identified by their whole file name", len(clash), clash[:5])
    return [p.name if stems[p.stem] > 1 else p.stem for p in paths]


def _load_detectors(args: argparse.Namespace) -> list:
    """The detectors of ``--model`` with the command line's inference overrides."""
    from ..detection.detector import SPPDetector
    from ..utils.device import resolve_device

    device = resolve_device(args.device)
    detectors = [SPPDetector.load(m, weights=args.weights).to(device) for m in args.model]
    for det in detectors:
        if args.scales:
            det.configure(scales=args.scales)
        if args.score:
            det.configure(score=args.score)
        if args.fc:
            det.configure(fc=args.fc)
    return detectors


def _proposal_stream(args: argparse.Namespace, det, paths: list[Path], ids: list[str],
                     out: Path):
    """``(path, boxes or None, error, seconds)`` per image: from ``--proposals`` or the
    detector's proposer in worker processes (overlapped with the network), with the detector's
    own settings."""
    from ..detection.proposal_cache import ProposalConfig, iter_proposals, load_proposal_file

    if args.proposals:
        given = load_proposal_file(args.proposals, ids)
        return ((str(p), given[i], "", 0.0) for p, i in zip(paths, ids))
    pcfg = ProposalConfig(method=args.proposer or det.settings.proposer,
                          max_side=args.ss_max_side or det.settings.ss_max_side,
                          max_proposals=args.max_proposals or det.settings.max_proposals)
    return iter_proposals(paths, out / "cache" / "proposals", pcfg, args.workers)


def _settings_record(args: argparse.Namespace, det) -> dict:
    """What the timings were measured with."""
    import torch

    st = det.settings
    return {"proposer": "given" if args.proposals else (args.proposer or st.proposer),
            "ss_max_side": args.ss_max_side or st.ss_max_side,
            "max_proposals": args.max_proposals or st.max_proposals, "scales": list(st.scales),
            "fc": st.fc, "mode": args.mode, "workers": args.workers, "device": str(det.device),
            "torch_threads": torch.get_num_threads()}


def main(args: argparse.Namespace) -> int:
    from ..utils.run_dir import check_output_dir, claim_folder, command_settings

    out = check_output_dir(args.output_dir)
    detectors = _load_detectors(args)
    det = detectors[0]
    args.mode = args.mode or det.settings.mode
    paths = _images(args.images)
    ids = image_ids(paths)
    with claim_folder(out, "detect", command_settings(args), OUTPUTS, args.force):
        return _detect(args, out, detectors, paths, ids)


def _detect(args: argparse.Namespace, out: Path, detectors: list, paths: list[Path],
            ids: list[str]) -> int:
    """Run the detectors over ``paths`` into the claimed folder ``out``."""
    import numpy as np
    from tqdm import tqdm

    from ..data.decode import ImageDecodeError, decode_image
    from ..detection.combine import detect_combined
    from ..detection.visualize import draw_detections
    from ..evaluation.voc import write_devkit_results
    from ..utils.run_dir import atomic_write_text
    from ..utils.timing import StageClock, summarize_timings, timing_line

    det = detectors[0]
    id_of = {str(p): i for p, i in zip(paths, ids)}
    stream = _proposal_stream(args, det, paths, ids, out)
    thresh = args.thresh if args.thresh is not None else (
        0.5 if det.settings.score == "softmax" else 0.0)
    (out / "images").mkdir(parents=True, exist_ok=True)
    results, devkit, failed = {}, [], {}

    def flush() -> None:  # finished images are kept whatever happens to the next one
        atomic_write_text(out / "detections.json", json.dumps(results, indent=1))
        if failed:
            atomic_write_text(out / "failed.json", json.dumps(failed, indent=1))

    clock = StageClock()
    try:
        for n, (path, boxes, err, prop_s) in enumerate(tqdm(
                stream, total=len(paths), desc=f"detect ({args.mode})",
                disable=args.no_progress, unit="img")):
            p = Path(path)
            clock.start("decode")
            if boxes is None:
                logging.warning("no proposals for %s: %s", p, err)
                failed[str(p)] = f"no proposals: {err}"
                clock.lap()
                continue
            image_id = id_of[path]
            try:  # one image never ends the job
                image = decode_image(p)
                clock.stop()
                d = (detect_combined(detectors, image, boxes, args.mode) if len(detectors) > 1
                     else det.detect(image, boxes, args.mode))
            except ImageDecodeError as e:
                logging.warning("skipping %s", e)
                failed[str(p)] = str(e)
                clock.lap()
                continue
            except (RuntimeError, MemoryError, ValueError, OSError) as e:
                logging.warning("skipping %s: %s: %s", p, type(e).__name__, e)
                failed[str(p)] = f"{type(e).__name__}: {e}"
                clock.lap()
                continue
            devkit.append((image_id, d.boxes.numpy(), d.scores.numpy(), d.labels.numpy()))
            clock.start("draw")
            try:  # a picture that cannot be drawn or written loses the picture, not the image
                draw_detections(image, d.boxes.numpy(), d.scores.numpy(), d.labels.numpy(),
                                det.classes, thresh).save(out / "images" / f"{image_id}.png")
            except (ValueError, OSError, MemoryError) as e:
                logging.warning("no picture of %s: %s: %s", p, type(e).__name__, e)
                failed[str(p)] = f"picture only ({type(e).__name__}: {e}); detections kept"
            clock.stop()
            seconds = {**d.timings, **clock.lap(), "proposals": prop_s,
                       "windows": len(boxes)}
            results[image_id] = {**d.to_json(det.classes), "image": str(p),
                                 "seconds": {k: round(float(v), 4) for k, v in seconds.items()}}
            if (n + 1) % FLUSH_EVERY == 0:
                flush()
    finally:  # whatever ended the loop, what was finished is written
        flush()
        timing = summarize_timings([r["seconds"] for r in results.values()])
        atomic_write_text(out / "timing.json", json.dumps(
            {**timing, "settings": _settings_record(args, det)}, indent=1))
        write_devkit_results(out / "devkit", det.classes, devkit)
    if timing["images"]:
        print(timing_line(timing))
    n = sum(int((np.array(r["scores"]) > thresh).sum()) for r in results.values())
    print(f"{len(results)} image(s), {n} detection(s) above {thresh}; wrote {out}"
          + (f"; {len(failed)} failed (failed.json)" if failed else ""))
    return 0 if results or not paths else 1
