"""``sppnet train-det``: train an SPP-net detector on a VOC-format folder, stage by stage.

Stages (``--stages``): cache (proposals + conv maps), finetune, svm, bbox, eval. A rerun with the
same output directory loads finished stages instead of recomputing them. Under ``torchrun`` with
``--stages cache`` every process fills its share of the caches.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..detection.config import PROPOSERS
from ..utils.device import DEVICE_HELP
from .args import BACKBONE_HELP, WEIGHTS_HELP

# CLI flag -> DetConfig field
FLAGS = {"data": "data", "split": "split", "test_data": "test_data", "test_split": "test_split",
         "images": "images", "test_images": "test_images",
         "output_dir": "output_dir", "cache_dir": "cache_dir", "backbone": "backbone",
         "weights": "weights", "proposals": "proposals", "scales": "scales",
         "svm_layers": "svm_layers", "ft_iters": "ft_iters", "workers": "workers",
         "classes": "classes", "seed": "seed", "mode": "mode",
         "max_proposals": "proposal.max_proposals", "proposer": "proposal.method",
         "device": "device",
         "finetune": "finetune", "e2e_convs": "e2e_convs"}


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet train-det")
    p.add_argument("--data", help="VOC-format training folder (devkit layout or image + XML) or "
                                  "a COCO instances .json")
    p.add_argument("--split", help="ImageSets/Main/<split>.txt of --data")
    p.add_argument("--images", help="COCO --data: the folder its file_names are in")
    p.add_argument("--test-data", help="VOC-format folder or COCO .json to evaluate on after "
                                       "training")
    p.add_argument("--test-images", help="COCO --test-data: its image folder")
    p.add_argument("--test-split")
    p.add_argument("--output-dir", help="run folder (default runs/det)")
    p.add_argument("--cache-dir", help="proposal and conv-map cache (default OUTPUT_DIR/cache)")
    p.add_argument("--backbone", help=BACKBONE_HELP)
    p.add_argument("--weights", help=WEIGHTS_HELP)
    p.add_argument("--proposals", help="precomputed windows: a folder of <image_id>.npz or one "
                                       ".npz (default: Selective Search)")
    p.add_argument("--scales",
                   help="shorter sides the conv maps are computed at: e.g. 688 (the paper's 1 "
                        "scale) or 480,576,688,864,1200 (its 5); auto (the default: 1 scale) or "
                        "auto:N (N scales) chooses them from the training boxes so that a "
                        "typical object comes out near 224x224, the size the network was "
                        "trained at")
    p.add_argument("--mode", choices=("spp", "rcnn"),
                   help="feature source of every stage: spp (default; windows pooled from the "
                        "image's conv map) or rcnn (the R-CNN way: conv net per warped window, "
                        "trained on its own features)")
    p.add_argument("--max-proposals", type=int, help="windows per image")
    p.add_argument("--proposer", choices=PROPOSERS,
                   help="proposal method (default selective_search_fast)")
    p.add_argument("--finetune", choices=("auto", "fc", "e2e"),
                   help="fc: the paper's fine-tuning (fc6/fc7/fc8 on pooled windows of the frozen "
                        "trunk); e2e: beyond the paper, the trunk's last --e2e-convs "
                        "convolutions trained with the head through the window pyramid (softmax "
                        "+ box deltas, Fast R-CNN's loss); auto (default): e2e in mode spp, fc "
                        "in mode rcnn")
    p.add_argument("--e2e-convs", type=int,
                   help="with --finetune e2e: how many of the trunk's convolutions train, "
                        "counted from the last")
    p.add_argument("--svm-layers", help="features the SVMs read: any of pool5,fc6,fc7")
    p.add_argument("--ft-iters", type=int, help="fine-tuning iterations")
    p.add_argument("--workers", type=int, help="proposal worker processes")
    p.add_argument("--classes", help="class names in label order (default: from the data)")
    p.add_argument("--seed", type=int)
    p.add_argument("--stages", default="cache,finetune,svm,bbox,eval",
                   help="which stages to run (default all)")
    p.add_argument("--config", help="JSON file of DetConfig fields")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any DetConfig field (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="delete the trained stages in OUTPUT_DIR (head, SVMs, box regression, "
                        "model, eval) and recompute all of them; the verified caches stay")
    p.add_argument("--device", help=DEVICE_HELP + "; the backbone and the fc head run there, "
                                             "caches, SVMs and box regression on the CPU")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=main)
    return p


def parse_scales(text: str) -> dict:
    """``--scales``: ``auto`` / ``auto:N`` (chosen from the data) or shorter sides ``a,b,...``,
    as DetConfig fields."""
    head, _, n = text.strip().lower().partition(":")
    if head == "auto":
        try:
            count = int(n) if n else 1
        except ValueError:
            raise ValueError(f"--scales auto:N needs an integer N, got {text!r}") from None
        return {"scales": (), "auto_scales": count}
    return {"scales": text}


def resolve_config(args: argparse.Namespace):
    from ..detection.config import DetConfig
    from ..utils.config import config_from_args

    return config_from_args(DetConfig(), args, FLAGS, {"scales": parse_scales})


def main(args: argparse.Namespace) -> int:
    from ..detection import train_detector

    cfg = resolve_config(args)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    model_dir = train_detector(cfg, stages, progress=not args.no_progress, force=args.force)
    res = Path(cfg.output_dir) / "eval" / "results.json"
    print(f"detector: {model_dir}")
    if "eval" in stages and res.is_file():
        r = json.loads(res.read_text())
        for name, v in r["variants"].items():
            print(f"  {name:>16}: mAP {100 * v['mAP']:.1f}")
        print(f"results: {res}")
    return 0
