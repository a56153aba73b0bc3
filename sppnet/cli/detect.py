"""``sppnet detect``: run a trained detector on an image or a folder of images.

Writes ``detections.json`` (``boxes``/``scores``/``labels`` per image, torchvision-style, 0-based
continuous pixels), VOC devkit result files (``devkit/comp4_det_test_<class>.txt``, 1-based),
a PNG per image with the boxes drawn, and ``timing.json`` (median seconds per stage, with the
provenance of the models timed) to ``--output-dir``. The images go through the one run loop
(:mod:`sppnet.detection.run`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from ..data.decode import IMAGE_EXTENSIONS, is_image_file, list_images
from ..utils.config import number_arg
from .args import add_inference_args, add_output_args, load_detectors

FLUSH_EVERY = 20  # detections.json is rewritten (atomically) after this many images
# what detect writes; --force replaces them (its proposal cache, OUTPUT_DIR/cache, stays)
OUTPUTS = ("detections.json", "failed.json", "timing.json", "devkit", "images")


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet detect")
    p.add_argument("images", type=Path, help="an image file or a folder of images")
    p.add_argument("--model", type=Path, required=True, action="append",
                   help="detector folder (train-det's OUTPUT_DIR/model); give it twice to "
                        "combine two detectors (NMS on the union of their windows)")
    add_output_args(p, "replace detections made with other settings in OUTPUT_DIR")
    p.add_argument("--thresh", type=number_arg(), default=None,
                   help="draw detections scoring above this (default 0 for SVMs, 0.5 softmax)")
    add_inference_args(p)
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


def _settings_record(args: argparse.Namespace, det) -> dict:
    """What the timings were measured with."""
    import torch

    st = det.settings
    return {"proposer": "given" if args.proposals else st.proposal.method,
            "ss_max_side": st.proposal.max_side, "max_proposals": st.proposal.max_proposals,
            "scales": list(st.scales), "fc": st.fc, "mode": st.mode, "workers": args.workers,
            "device": str(det.device), "torch_threads": torch.get_num_threads()}


def main(args: argparse.Namespace) -> int:
    from ..detection.proposal_cache import load_proposal_file
    from ..utils.run_dir import check_output_dir, claim_folder, command_settings

    out = check_output_dir(args.output_dir)
    detectors = load_detectors(args, args.model)
    paths = _images(args.images)
    ids = image_ids(paths)
    # every input is read before the folder is claimed (--force deletes the earlier outputs)
    given = load_proposal_file(args.proposals, ids) if args.proposals else None
    with claim_folder(out, "detect", command_settings(args), OUTPUTS, args.force):
        return _detect(args, out, detectors, paths, ids, given)


class _Outputs:
    """What ``detect`` writes as the images come: ``detections.json`` (rewritten every
    :data:`FLUSH_EVERY` images and at the end, so finished images are kept whatever happens to
    the next), ``failed.json``, the devkit files, a picture per image."""

    def __init__(self, out: Path, classes: list[str], thresh: float) -> None:
        self.out, self.classes, self.thresh = out, classes, thresh
        self.results: dict[str, dict] = {}
        self.failed: dict[str, str] = {}
        self.devkit: list = []
        (out / "images").mkdir(parents=True, exist_ok=True)

    def draw(self, r) -> float:
        """The image's picture (a picture that cannot be drawn or written loses the picture,
        not the image); returns the seconds it took."""
        from ..detection.visualize import draw_detections

        t0 = time.perf_counter()
        d = r.detections
        try:
            draw_detections(r.image, d.boxes.numpy(), d.scores.numpy(), d.labels.numpy(),
                            self.classes, self.thresh).save(
                self.out / "images" / f"{r.image_id}.png")
        except (ValueError, OSError, MemoryError) as e:
            logging.warning("no picture of %s: %s: %s", r.path, type(e).__name__, e)
            self.failed[r.path] = f"picture only ({type(e).__name__}: {e}); detections kept"
        return time.perf_counter() - t0

    def add(self, r) -> None:
        """One image of the run loop: its detections (and picture), or why it failed."""
        if not r.ok:
            self.failed[r.path] = r.error
            return
        d = r.detections
        self.devkit.append((r.image_id, d.boxes.numpy(), d.scores.numpy(), d.labels.numpy()))
        draw = self.draw(r)
        seconds = {**r.timings, "draw": draw, "wall": r.timings["wall"] + draw}
        self.results[r.image_id] = {**d.to_json(self.classes), "image": r.path,
                                    "seconds": {k: round(float(v), 4)
                                                for k, v in seconds.items()}}
        if len(self.results) % FLUSH_EVERY == 0:
            self.flush()

    def flush(self) -> None:
        from ..utils.run_dir import atomic_write_text

        atomic_write_text(self.out / "detections.json", json.dumps(self.results, indent=1))
        if self.failed:
            atomic_write_text(self.out / "failed.json", json.dumps(self.failed, indent=1))
        else:  # a rerun in the same folder: an earlier run's failures are not this run's
            (self.out / "failed.json").unlink(missing_ok=True)


def _detect(args: argparse.Namespace, out: Path, detectors: list, paths: list[Path],
            ids: list[str], given: dict | None) -> int:
    """Run the detectors over ``paths`` (windows: ``given``, else proposed) into the claimed
    folder ``out``."""
    import numpy as np
    from tqdm import tqdm

    from ..detection.detector_files import detector_inputs
    from ..detection.run import run_images
    from ..evaluation.voc import write_devkit_results
    from ..utils.run_dir import atomic_write_text
    from ..utils.timing import summarize_timings, timing_line

    det = detectors[0]
    thresh = args.thresh if args.thresh is not None else (
        0.5 if det.settings.score == "softmax" else 0.0)
    outputs = _Outputs(out, det.classes, thresh)
    stream = run_images(detectors, paths, given, ids=ids, cache_dir=out / "cache" / "proposals",
                        workers=args.workers)
    try:
        for r in tqdm(stream, total=len(paths), desc=f"detect ({det.settings.mode})",
                      disable=args.no_progress, unit="img"):
            outputs.add(r)
    finally:  # whatever ended the loop, what was finished is written
        outputs.flush()
        inputs = [f for m, d in zip(args.model, detectors) for f in detector_inputs(m, d.spec)]
        timing = summarize_timings([r["seconds"] for r in outputs.results.values()],
                                   inputs=inputs)
        atomic_write_text(out / "timing.json", json.dumps(
            {**timing, "settings": _settings_record(args, det)}, indent=1))
        write_devkit_results(out / "devkit", det.classes, outputs.devkit)
    if timing["images"]:
        print(timing_line(timing))
    n = sum(int((np.array(r["scores"]) > thresh).sum()) for r in outputs.results.values())
    failed = outputs.failed
    print(f"{len(outputs.results)} image(s), {n} detection(s) above {thresh}; wrote {out}"
          + (f"; {len(failed)} failed (failed.json)" if failed else ""))
    return 0 if outputs.results or not paths else 1
