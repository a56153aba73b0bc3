"""Flags several commands share, each set added by one helper: the output folder a command
claims (``--output-dir``, ``--force``), and for ``sppnet detect`` and ``sppnet eval-det`` which
detector, where it runs, whose windows and the inference settings a run may change — with the
detectors they name loaded with those settings through the one config mechanism."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..detection.config import PROPOSERS
from ..utils.config import (
    MAX_DETECTION_SIDE,
    MAX_WINDOWS,
    MAX_WORKERS,
    config_from_args,
    int_arg,
    ints_arg,
)
from ..utils.device import DEVICE_HELP

# flag -> the InferenceSettings field it sets (a run's change; the detector's file stays)
INFERENCE_FLAGS = {"mode": "mode", "scales": "scales", "score": "score",
                   "svm_layer": "svm_layer", "fc": "fc",
                   "proposer": "proposal.method", "ss_max_side": "proposal.max_side",
                   "max_proposals": "proposal.max_proposals"}

BACKBONE_HELP = ("mobilenet_v2 (default; --weights: its TFLite file); resnet18/34/50/101, vgg16, "
                 "vgg16_bn or mobilenet_v3_large (--weights: a torchvision- or timm-format "
                 "state dict, .safetensors or .pth/.pt); or a train-cls checkpoint")
WEIGHTS_HELP = ("the backbone's weights: mobilenet_v2's TFLite file, or a torchvision/timm "
                "state dict (.safetensors, .pth, .pt; read without unpickling objects)")


def add_output_args(p: argparse.ArgumentParser, force_help: str) -> None:
    """``--output-dir`` (required: the folder the command claims) and ``--force``
    (``force_help``: what it replaces)."""
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--force", action="store_true", help=force_help)


def add_inference_args(p: argparse.ArgumentParser, score: bool = True) -> None:
    """``--mode``, ``--scales``, ``--score`` (with ``score``), ``--fc``, the proposal settings,
    ``--proposals``, ``--workers``, ``--weights``, ``--device`` and ``--no-progress``."""
    p.add_argument("--mode", choices=("spp", "rcnn"),
                   help="spp: conv once per image; rcnn: conv per warped window; default: the "
                        "way the (first) detector was trained")
    p.add_argument("--scales", type=ints_arg(32, MAX_DETECTION_SIDE),
                   help="override the detector's scales, e.g. 688 or 480,576,688,864,1200")
    if score:
        p.add_argument("--score", choices=("svm", "softmax"), help="override the scoring")
        p.add_argument("--svm-layer", choices=("pool5", "fc6", "fc7"),
                       help="with --score svm: the layer whose SVMs score (one the detector "
                            "trained SVMs on)")
    p.add_argument("--fc", help="fc6/fc7 at test time: fp32 (default), int8 or svd:R6,R7")
    p.add_argument("--proposals", help="precomputed windows (.npz per image id or one .npz); "
                                       "default: the detector's proposer, cached")
    p.add_argument("--proposer", choices=PROPOSERS,
                   help="override the detector's proposal method")
    p.add_argument("--ss-max-side", type=int_arg(16, MAX_DETECTION_SIDE),
                   help="override the detector's Selective Search longer side")
    p.add_argument("--max-proposals", type=int_arg(1, MAX_WINDOWS),
                   help="override the detector's windows per image")
    p.add_argument("--workers", type=int_arg(0, MAX_WORKERS), default=2,
                   help="proposal worker processes")
    p.add_argument("--weights", type=Path,
                   help="the backbone's weight file (the TFLite file), when the path the "
                        "detector recorded does not exist here; checked against its hash")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + "; proposals stay on the CPU")
    p.add_argument("--no-progress", action="store_true")


def load_detectors(args: argparse.Namespace, models: list[Path]) -> list:
    """The detectors of ``models`` on ``--device``, each with the command line's inference
    settings (its own, the flags given changing them; a bad value fails here, naming it)."""
    from ..detection.detector import SPPDetector
    from ..utils.device import resolve_device

    device = resolve_device(args.device)  # before anything else: a missing GPU is one line
    detectors = [SPPDetector.load(m, weights=args.weights).to(device) for m in models]
    for det in detectors:
        det.configure(settings=config_from_args(det.settings, args, INFERENCE_FLAGS))
    for m, det in zip(models[1:], detectors[1:]):
        if list(det.classes) != list(detectors[0].classes):
            raise ValueError(f"the detectors disagree on their classes: {models[0]} has "
                             f"{list(detectors[0].classes)}, {m} has {list(det.classes)}")
    return detectors
