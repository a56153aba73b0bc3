"""``sppnet eval-cls``: test-time views of a trained classifier on its run's held-out split.

    sppnet eval-cls --run runs/caltech/zf5_spp_multi_s0 --views center,10crop,full,fmap10,multiview
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..utils.config import MAX_BATCH, MAX_INPUT_SIDE, int_arg
from ..utils.device import DEVICE_HELP

log = logging.getLogger("sppnet.eval_cls")


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet eval-cls")
    p.add_argument("--run", required=True, type=Path,
                   help="a train-cls output folder (config.json + checkpoints)")
    p.add_argument("--checkpoint", default="best", help="'best', 'last' or a .safetensors path")
    p.add_argument("--views", default="center,10crop,full,fmap10,multiview",
                   help="comma-separated: center, 10crop, full, fmap10, multiview")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="which part of the run's split to evaluate (default test)")
    p.add_argument("--full-size", type=int_arg(1, MAX_INPUT_SIDE), default=None,
                   help="shorter side of the full-image view (default: the run's resize)")
    p.add_argument("--limit", type=int_arg(0), default=0,
                   help="evaluate only the first N images (0: all)")
    p.add_argument("--batch-size", type=int_arg(1, MAX_BATCH), default=1,
                   help="full view: images per zero-padded batch (default 1: one at a time, "
                        "exact)")
    p.add_argument("--output", type=Path, default=None,
                   help="results JSON (default RUN/views_<split>.json)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=main)
    return p


def _checked_run(args: argparse.Namespace, modes: list[str]) -> Path:
    """The run folder checked (a train-cls run, not being written unawares) and the results
    file it will be written to."""
    from ..classification.views import VIEW_MODES
    from ..utils.run_dir import check_output_file, lock_holder, run_kind

    bad = [m for m in modes if m not in VIEW_MODES]
    if bad:
        raise ValueError(f"--views: unknown mode(s) {bad}; choose from {', '.join(VIEW_MODES)}")
    if not (args.run / "config.json").exists():
        raise FileNotFoundError(f"--run {args.run}: no config.json there (is it a train-cls "
                                "folder?)")
    kind, _ = run_kind(args.run)
    if kind != "train-cls":
        raise ValueError(f"--run {args.run} holds a {kind} run, not a train-cls run")
    out = check_output_file(args.output or args.run / f"views_{args.split}.json", "--output",
                            ("views_*.json",))
    holder = lock_holder(args.run)
    if holder is not None:
        log.warning("%s is being trained right now (pid %s): its checkpoints may change while "
                    "they are evaluated", args.run, holder.get("pid"))
    return out


def _held_out(args: argparse.Namespace, classes: list[str]) -> list:
    """``(image, label)`` of the run's ``--split`` part (its config's seeded split), the first
    ``--limit``; undecodable files skipped by name."""
    from ..classification.config import TrainConfig
    from ..data.decode import ImageDecodeError, decode_image
    from ..data.folder import ClassFolder, split_per_class
    from ..utils.config import apply_overrides, load_config

    cfg = apply_overrides(TrainConfig(), load_config(args.run / "config.json"))
    folder = ClassFolder.scan(cfg.data, classes=classes)
    parts = split_per_class(folder.samples, list(cfg.split), cfg.seed)
    samples = parts[{"train": 0, "val": 1, "test": 2}[args.split]]
    if args.limit:
        samples = samples[:args.limit]
    images = []
    for s in samples:
        try:
            images.append((decode_image(s.path), s.label))
        except ImageDecodeError as e:
            log.warning("skipping %s", e)
    return images


def main(args: argparse.Namespace) -> int:
    import torch

    from ..classification.views import ViewSettings, evaluate_views
    from ..models import load_model
    from ..utils.device import resolve_device
    from ..utils.run_dir import atomic_write_text

    modes = [m.strip() for m in args.views.split(",") if m.strip()]
    out = _checked_run(args, modes)
    ckpt = Path(args.checkpoint) if args.checkpoint.endswith(".safetensors") else (
        args.run / f"{args.checkpoint}.safetensors")
    model, meta = load_model(ckpt)
    images = _held_out(args, meta["classes"])
    inp = meta["input"]
    settings = ViewSettings(crop=inp["crop_size"], resize=inp["resize"],
                            full_size=args.full_size or inp["resize"], mean=inp["mean"],
                            input_scale=inp["input_scale"])
    model = model.to(resolve_device(args.device)).to(memory_format=torch.channels_last)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    results = evaluate_views(model, images, modes, settings, progress=not args.no_progress,
                             batch_size=args.batch_size)
    atomic_write_text(out, json.dumps({"checkpoint": str(ckpt), "split": args.split,
                               "settings": settings.__dict__, "views": results}, indent=2) + "\n")
    print(f"{'view':<10} {'top-1':>7} {'top-5':>7} {'views':>6} {'conv passes':>12} {'s/img':>7}")
    for mode, r in results.items():
        print(f"{mode:<10} {100 * r['top1']:6.2f}% {100 * r['top5']:6.2f}% "
              f"{r['views_per_image']:6.1f} {r['conv_passes_per_image']:12.1f} "
              f"{r['seconds_per_image']:7.3f}")
    print(f"wrote {out}")
    return 0
