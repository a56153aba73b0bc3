"""``sppnet features``: extract (and cache) full-image SPP features of a class folder.

    sppnet features --data ../shared/data/caltech101/101_ObjectCategories --model mobilenet_v2 \
        --weights ../shared/data/imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite \
        --variant full --size 224 --levels 3,2,1 --cache-dir runs/features
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..utils.config import MAX_INPUT_SIDE, MAX_LEVEL, config_from_args, int_arg, ints_arg
from ..utils.device import DEVICE_HELP
from .args import BACKBONE_HELP, WEIGHTS_HELP

# flag -> FeatureSpec field
FEATURE_FLAGS = {"model": "model", "weights": "weights", "feature_stride": "feature_stride",
                 "variant": "variant", "size": "size", "levels": "levels"}


def add_feature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="class folder root/<class>/<image>")
    p.add_argument("--model", default="mobilenet_v2", help=BACKBONE_HELP)
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--feature-stride", type=int, default=32, choices=(16, 32),
                   help="mobilenet_v2: 16 or 32")
    p.add_argument("--variant", default="full", choices=["full", "crop", "warp"],
                   help="full image (shorter side SIZE), its centre square, or warped to SIZE^2")
    p.add_argument("--size", type=int_arg(8, MAX_INPUT_SIDE), default=224)
    p.add_argument("--levels", type=ints_arg(1, MAX_LEVEL), default=(3, 2, 1),
                   help="pyramid levels to extract, e.g. 6,3,2,1")
    p.add_argument("--cache-dir", type=Path, default=Path("runs/features"),
                   help="feature cache (one .npz per setting)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--no-progress", action="store_true")


def load_features(args: argparse.Namespace):
    """``(folder, spec, features)`` for the arguments of :func:`add_feature_args`."""
    from ..classification.features import FeatureSpec, extract_features
    from ..data.folder import ClassFolder
    from ..utils.device import resolve_device
    from ..utils.run_dir import check_cache_dir

    check_cache_dir(args.cache_dir)  # a cache of its own, never a run's folder
    device = resolve_device(args.device)
    folder = ClassFolder.scan(args.data)
    spec = config_from_args(FeatureSpec(), args, FEATURE_FLAGS)
    feats = extract_features(spec, folder.samples, args.cache_dir,
                             progress=not args.no_progress, device=device)
    return folder, spec, feats


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet features")
    add_feature_args(p)
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    folder, spec, feats = load_features(args)
    dims = {k: v.shape[1] for k, v in feats.items() if k.startswith("level_")}
    print(f"{len(folder.samples)} images, {int((~feats['ok']).sum())} undecodable; "
          f"dims per level {dims}; cached in {args.cache_dir}")
    return 0
