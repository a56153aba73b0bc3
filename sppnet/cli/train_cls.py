"""``sppnet train-cls``: train an SPP-net (or a no-SPP baseline) on a folder of photos.

Single-size: ``--sizes 224``; multi-size: ``--sizes 224,180`` (one epoch each, alternating) or
``--size-range 180,224``. Runs the same under ``torchrun --nproc_per_node N``.
"""

from __future__ import annotations

import argparse

# CLI flag -> TrainConfig field (flags left unset keep the config file's or default value)
FLAGS = {
    "data": "data", "output_dir": "output_dir", "model": "model", "width_mult": "width_mult",
    "weights": "weights", "trunk_lr_mult": "trunk_lr_mult", "freeze_layers": "freeze_layers",
    "stop_when_done": "stop_when_done", "lr_drops": "lr_drops", "lr_milestones": "lr_milestones",
    "fc_dim": "fc_dim", "dropout": "dropout", "levels": "levels", "sizes": "sizes",
    "size_range": "size_range", "resize": "resize", "split": "split", "seed": "seed",
    "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay",
    "lr_patience": "lr_patience", "checkpoint_every": "checkpoint_every", "threads": "threads",
    "device": "device", "full_image": "full_image", "full_max_side": "full_max_side",
    "recipe": "recipe",
}


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet train-cls")
    p.add_argument("--data", help="image folder laid out root/<class>/<image>")
    p.add_argument("--output-dir", help="where config, metrics, curves, checkpoints go")
    p.add_argument("--model", help="model name (sppnet.models.list_models()); default zf5_spp")
    p.add_argument("--weights", help="mobilenet_v2_{spp,gap,fixed}: the TFLite file whose "
                                     "ImageNet trunk is fine-tuned; its defaults are then the "
                                     "fine-tuning recipe (lr 0.001, trunk x0.1, 39 convs "
                                     "frozen, fc 1024, batch 32, one lr drop, <= 10 epochs), "
                                     "each flag still overrides")
    p.add_argument("--recipe", choices=("auto", "paper", "finetune"),
                   help="the defaults: paper (from scratch), finetune (pretrained), auto "
                        "(default: finetune when --weights is given)")
    p.add_argument("--trunk-lr-mult", type=float,
                   help="trunk learning rate = lr * this (default 1; fine-tuning e.g. 0.1)")
    p.add_argument("--freeze-layers", type=int,
                   help="do not train the first N trunk conv layers (MobileNetV2: 39 = stem "
                        "and blocks 1-13)")
    p.add_argument("--stop-when-done", action="store_const", const=True,
                   help="stop once the lr was divided --lr-drops times and validation stopped "
                        "improving again")
    p.add_argument("--lr-drops", type=int, help="how often the plateau schedule divides lr "
                                               "by 10 (default 2)")
    p.add_argument("--lr-milestones", help="divide lr by 10 after these epochs, e.g. 47,57 "
                                           "(a fixed step schedule instead of the plateau one)")
    p.add_argument("--width-mult", type=float, help="conv filter multiplier, e.g. 0.25")
    p.add_argument("--fc-dim", type=int, help="fc6/fc7 width (default 4096)")
    p.add_argument("--dropout", type=float, help="fc6/fc7 dropout (default 0.5)")
    p.add_argument("--levels", help="pyramid levels, e.g. 6,3,2,1 (default) or 4,3,2,1")
    p.add_argument("--sizes", help="training sizes, one epoch each in turn: 224 or 224,180")
    p.add_argument("--size-range", help="random size per epoch in lo,hi, e.g. 180,224")
    p.add_argument("--resize", type=int, help="shorter side before cropping (default 256)")
    p.add_argument("--full-image", action="store_const", const=True,
                   help="train on whole images at their own aspect ratio (shorter side = "
                        "--sizes, longer side capped), mixed sizes per padded batch; SPP heads")
    p.add_argument("--full-max-side", type=int,
                   help="--full-image: cap of the longer side (default twice the size)")
    p.add_argument("--split", help="per-class train,val,test: counts (30,10,None) or fractions "
                                   "(0.7,0.1,0.2, default)")
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size (default 64)")
    p.add_argument("--lr", type=float, help="initial learning rate (default 0.01)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--lr-patience", type=int, help="plateau epochs before lr /= 10")
    p.add_argument("--checkpoint-every", type=int, help="also checkpoint every N steps")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--config", help="JSON file of TrainConfig fields")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue exactly from OUTPUT_DIR/last.safetensors")
    p.add_argument("--force", action="store_true",
                   help="start over in an OUTPUT_DIR that holds a run (deletes its checkpoints "
                        "and metrics)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=main)
    return p


def resolve_config(args: argparse.Namespace):
    """Defaults (the paper's, or the fine-tuning recipe when ``--weights`` is given) ->
    ``--config FILE`` -> flags -> ``--set``: the recipe fills only what the user left unset."""
    from ..classification.config import TrainConfig, with_recipe
    from ..utils.config import apply_overrides, config_from_args, given_fields

    cfg = config_from_args(TrainConfig(), args, FLAGS)
    cfg = with_recipe(cfg, given_fields(TrainConfig, args, FLAGS))
    return apply_overrides(cfg, {"progress": False}) if args.no_progress else cfg


def main(args: argparse.Namespace) -> int:
    from ..classification.train import train

    cfg = resolve_config(args)
    results = train(cfg, resume=args.resume, force=args.force)
    test = results.get("test")
    if test:
        print(f"test top-1 {100 * test['top1']:.2f}%  top-5 {100 * test['top5']:.2f}%  "
              f"({test['n']} images)  -> {cfg.output_dir}/results.json")
    return 0
