"""Training configuration: a frozen dataclass with a comment per field (STYLE 12).

Resolution order: defaults -> ``--config FILE.json`` -> explicit command-line flags ->
``--set key=value`` overrides. The resolved config is written next to the outputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..utils.config import (
    MAX_BATCH,
    MAX_BATCH_INPUT_BYTES,
    MAX_FC_DIM,
    MAX_INPUT_SIDE,
    MAX_LEVEL,
    MAX_THREADS,
    MAX_WIDTH_MULT,
    check_int,
    check_int_tuple,
    check_number,
)

__all__ = ["TrainConfig", "RECIPES", "FINETUNE_RECIPE", "with_recipe"]

# What training starts from decides the defaults. From scratch: the paper's (the field defaults
# below: lr 0.01 on every layer, 4096-wide fc layers, /10 twice on plateaus). From pretrained
# weights (--weights): the fine-tuning recipe of the Caltech-101 study (docs/classification.md,
# docs/experiments/classification_finetune.sh: 88.3% test top-1 for SPP, seed 0). The paper's
# lr on a pretrained trunk and a new 4096-wide head diverges (train loss 33 after one epoch).
FINETUNE_RECIPE: dict[str, Any] = {
    "lr": 0.001,  # the new head's lr
    "trunk_lr_mult": 0.1,  # the pretrained trunk learns 10x slower
    "freeze_layers": 39,  # MobileNetV2's stem and blocks 1-13 (stride <= 16) stay as trained
    "fc_dim": 1024,  # fc6 / fc7 width
    "dropout": 0.5,
    "levels": (3, 2, 1),  # the SPP head's pyramid on the 7x7 map at 224
    "sizes": (224,),
    "resize": 256,
    "batch_size": 32,
    "lr_patience": 0,  # lr /10 as soon as an epoch does not improve val top-1,
    "lr_drops": 1,  # once,
    "stop_when_done": True,  # and stop when it again does not improve,
    "epochs": 10,  # or after 10 epochs
}
RECIPES: dict[str, dict[str, Any]] = {"auto": {}, "paper": {}, "finetune": FINETUNE_RECIPE}


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""  # image folder laid out root/<class>/<image> (Caltech-101 style)
    output_dir: str = "runs/cls"  # config.json, metrics.jsonl, curves.png, checkpoints
    model: str = "zf5_spp"  # a name from sppnet.models.list_models()
    weights: str = ""  # mobilenet_v2_{spp,gap,fixed}: the TFLite file (ImageNet trunk)
    trunk_lr_mult: float = 1.0  # the trunk's learning rate = lr * this (fine-tuning: e.g. 0.1)
    freeze_layers: int = 0  # the first N conv layers of the trunk are not trained (MobileNetV2:
    # 39 = the stem and blocks 1-13, everything at stride <= 16)
    width_mult: float = 1.0  # conv filter multiplier (0.25 trains in minutes on a CPU)
    fc_dim: int = 4096  # width of fc6 / fc7 (paper: 4096)
    dropout: float = 0.5  # on fc6 / fc7 (paper: 0.5)
    levels: tuple[int, ...] = (6, 3, 2, 1)  # pyramid levels of the _spp models (paper)
    sizes: tuple[int, ...] = (224,)  # training input sizes, one whole epoch each, in turn;
    # the first is the crop size, others are that crop resized (paper: 224 or 224,180)
    size_range: tuple[int, int] | None = None  # instead of sizes: a random size in [lo, hi]
    # per epoch, the hi crop resized (paper variant: 180,224)
    full_image: bool = False  # train (and validate) on whole images instead of crops: shorter
    # side = the epoch's size, aspect kept, several sizes per zero-padded batch (SPP heads only)
    full_max_side: int = 0  # full_image: longer side capped at this (0: twice the size)
    resize: int = 256  # shorter side before cropping (paper: 256)
    crop_mode: str = "corners"  # "corners": centre or one of 4 corners (paper); "random"
    flip: bool = True  # random horizontal flips
    lighting: float = 0.1  # std of AlexNet PCA colour noise; 0 disables
    mean: float = 128.0  # constant mean subtracted (paper, VOC/Caltech: 128)
    input_scale: float = 1.0 / 128  # then multiplied by this
    split: tuple[float | int | None, ...] = (0.7, 0.1, 0.2)  # per class: train, val, test;
    # ints = images per class, floats = fractions of the class, None = all that are left
    seed: int = 0  # splits, init, batch order, augmentation
    epochs: int = 30  # maximum number of epochs
    batch_size: int = 64  # global batch (split evenly over processes)
    lr: float = 0.01  # initial learning rate (paper: 0.01)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_patience: int = 3  # epochs without a better val error before lr /= 10
    lr_drops: int = 2  # how many times to divide by 10 (paper: twice)
    lr_milestones: tuple[int, ...] = ()  # divide by 10 after these epochs (1-based) instead of
    # on plateaus: a fixed step schedule (lr_patience and lr_drops are then unused for drops)
    stop_when_done: bool = False  # stop early once the lr has been divided lr_drops times
    # and validation has again not improved for lr_patience + 1 epochs
    checkpoint_every: int = 0  # also write last.safetensors every N steps (0: epoch ends only)
    threads: int = 0  # torch CPU threads (0: torch's default)
    device: str = "auto"  # "auto", "cpu" or "cuda"
    cache_images: bool = True  # decode every image once, keep it (resized) in memory
    progress: bool = True  # progress bars
    extra: tuple[str, ...] = ()  # free-form notes kept with the run (key=value entries)
    recipe: str = "auto"  # the defaults training starts from: "paper" (from scratch) or
    # "finetune" (FINETUNE_RECIPE; pretrained weights); "auto" = finetune when weights are given.
    # Fields the user sets keep their values either way.

    def validate(self) -> None:
        if not self.data:
            raise ValueError("data: give the image folder (root/<class>/<image>)")
        check_number("width_mult", self.width_mult, 0, MAX_WIDTH_MULT, lo_open=True)
        check_int("fc_dim", self.fc_dim, 1, MAX_FC_DIM)
        check_number("trunk_lr_mult", self.trunk_lr_mult, 0, 10)
        check_int("freeze_layers", self.freeze_layers, 0)
        if self.model.startswith("mobilenet_v2_") and not self.weights:
            raise ValueError(f"{self.model} fine-tunes the ImageNet MobileNetV2: give --weights "
                             "FILE.tflite (e.g. ../shared/data/imagenet_tflite/"
                             "mobilenet_v2_1.0_224_quant.tflite)")
        if self.weights and not self.model.startswith("mobilenet_v2_"):
            raise ValueError(f"--weights is for the mobilenet_v2_* models, not {self.model}")
        check_number("dropout", self.dropout, 0, 1, hi_open=True)
        check_int_tuple("levels", self.levels, hi=MAX_LEVEL)
        check_int_tuple("sizes", self.sizes, hi=MAX_INPUT_SIDE)
        if self.size_range is not None:
            check_int_tuple("size_range", self.size_range, hi=MAX_INPUT_SIDE)
            if len(self.size_range) != 2:
                raise ValueError(f"size_range must be lo,hi, got {self.size_range}")
        check_int("resize", self.resize, 1, MAX_INPUT_SIDE)
        check_int("full_max_side", self.full_max_side, 0, 2 * MAX_INPUT_SIDE)
        if self.full_image and self.size_range is not None:
            raise ValueError("full_image takes --sizes (shorter sides), not --size-range")
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1, MAX_BATCH)
        check_number("lr", self.lr, 0, 10, lo_open=True)
        check_number("momentum", self.momentum, 0, 1)
        check_number("weight_decay", self.weight_decay, 0, 1)
        check_int("lr_patience", self.lr_patience, 0)
        check_int("lr_drops", self.lr_drops, 0)
        check_int_tuple("lr_milestones", self.lr_milestones, allow_empty=True)
        if list(self.lr_milestones) != sorted(set(self.lr_milestones)):
            raise ValueError("lr_milestones must be increasing epoch numbers, got "
                             f"{','.join(map(str, self.lr_milestones))}")
        self._check_run_fields()

    def _check_run_fields(self) -> None:
        """The fields of how the run goes (checkpoints, threads, seed, inputs, the split)."""
        check_int("checkpoint_every", self.checkpoint_every, 0)
        check_int("threads", self.threads, 0, MAX_THREADS)
        check_int("seed", self.seed, 0)
        check_number("mean", self.mean, 0, 255)
        check_number("input_scale", self.input_scale, 0, 1, lo_open=True)
        check_number("lighting", self.lighting, 0, 10)
        for v in self.split:
            if v is None:
                continue
            if isinstance(v, (bool, str)) or not isinstance(v, (int, float)) or not (
                    v >= 0 and (isinstance(v, int) or v <= 1)):
                raise ValueError(f"split parts must be counts, fractions in [0, 1] or None, "
                                 f"got {v!r} in {self.split}")
        self._check_sizes()

    def _check_sizes(self) -> None:
        """The input sizes: ranges, the crop within the resized image, the batch's memory."""
        if self.size_range is not None:
            lo, hi = self.size_range
            if not 0 < lo <= hi:
                raise ValueError(f"size_range must be lo,hi with 0 < lo <= hi, got {lo},{hi}")
        if not self.sizes or min(self.sizes) <= 0:
            raise ValueError(f"sizes must be positive, got {self.sizes}")
        if self.crop_size > self.resize:
            raise ValueError(f"the crop ({self.crop_size}) must fit in the resized image "
                             f"(resize={self.resize})")
        if self.crop_mode not in ("corners", "random"):
            raise ValueError(f"crop_mode must be 'corners' or 'random', got {self.crop_mode!r}")
        if len(self.split) < 2:
            raise ValueError(f"split needs at least train and val parts, got {self.split}")
        side = self.crop_size if not self.full_image else max(self.sizes)
        long_side = side if not self.full_image else (self.full_max_side or 2 * side)
        batch_bytes = self.batch_size * 3 * side * long_side * 4
        if batch_bytes > MAX_BATCH_INPUT_BYTES:
            raise ValueError(f"batch_size {self.batch_size} at {side} x {long_side} px is "
                             f"{batch_bytes / 2**30:.1f} GB of inputs per batch (at most "
                             f"{MAX_BATCH_INPUT_BYTES / 2**30:.0f} GB); lower batch_size or the "
                             "sizes")
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")

    @property
    def crop_size(self) -> int:
        return self.size_range[1] if self.size_range else self.sizes[0]

    def epoch_size(self, epoch: int) -> int:
        """The input size of an epoch (multi-size: alternating, or random in the range)."""
        if self.size_range is not None:
            import numpy as np

            lo, hi = self.size_range
            return int(np.random.default_rng([self.seed, epoch, 7]).integers(lo, hi + 1))
        return self.sizes[epoch % len(self.sizes)]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def with_recipe(cfg: TrainConfig, given: set[str] | None = None) -> TrainConfig:
    """``cfg`` with ``recipe="auto"`` resolved (``finetune`` when weights are given, else
    ``paper``) and the recipe's values put into the fields the user did not set: ``given``
    names them (the CLI knows them exactly); without it, fields still at the paper's default
    count as not set."""
    name = cfg.recipe
    if name == "auto":
        name = "finetune" if cfg.weights else "paper"
    defaults = TrainConfig()
    if given is None:
        given = {k for k in RECIPES.get(name, {}) if getattr(cfg, k) != getattr(defaults, k)}
    changes = {k: v for k, v in RECIPES.get(name, {}).items() if k not in given}
    return dataclasses.replace(cfg, recipe=name, **changes)
