"""Training SPP-nets (and their no-SPP baselines) on a folder of photos: single-size, multi-size,
on one process or many (``torchrun``), resumable exactly.

Determinism: the batch order of an epoch comes from ``(seed, epoch)``, each sample's augmentation
from ``(seed, epoch, index)``, and dropout from torch's RNG, whose state every checkpoint keeps.
So a run resumed from a checkpoint, or split over several processes, follows the same path as an
uninterrupted single-process run (up to float summation order across processes).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.folder import (
    ClassFolder,
    DecodedImages,
    Sample,
    group_by_orientation,
    split_per_class,
)
from ..data.transforms import (
    CROP_POSITIONS,
    crop,
    ensure_min_size,
    lighting,
    pad_batch,
    resize_full,
    to_tensor,
)
from ..evaluation.topk import topk_correct
from ..models import get_model
from ..models.backbone import _load_weights, load_model
from ..utils.checkpoint import (
    CheckpointError,
    load_checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    save_checkpoint,
    with_prefix,
)
from ..utils.device import resolve_device
from ..utils.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    init_distributed,
    process_device,
    shutdown,
)
from ..utils.loss_guard import LossGuard, TrainingDiverged
from ..utils.provenance import record_stage_threads, write_results
from ..utils.run_dir import (
    RunFolderError,
    RunLock,
    check_output_dir,
    describe_diff,
    refuse_other_kind,
    remove_outputs,
    write_run_config,
)
from .config import RECIPES, TrainConfig, with_recipe

__all__ = ["PlateauSchedule", "train", "build_model", "load_model", "make_batch",
           "make_full_batch", "evaluate"]

log = logging.getLogger(__name__)


class PlateauSchedule:
    """Divide the learning rate by ``factor`` when the validation error has not improved for
    ``patience`` epochs, at most ``max_drops`` times (paper: 0.01, /10 twice).

    With ``milestones`` (1-based epoch numbers) the lr is divided after exactly those epochs
    instead, whatever validation does — a fixed step schedule, e.g. to give two nets the same
    schedule; ``max_drops`` is then their count and ``exhausted`` still watches validation."""

    def __init__(self, lr: float, patience: int = 3, max_drops: int = 2, factor: float = 0.1,
                 min_delta: float = 1e-4, milestones: tuple[int, ...] = ()) -> None:
        self.lr, self.patience, self.max_drops = lr, patience, max_drops
        self.factor, self.min_delta = factor, min_delta
        self.milestones = tuple(milestones)
        if self.milestones:
            self.max_drops = len(self.milestones)
        self.best = math.inf
        self.bad_epochs = 0
        self.drops = 0

    def step(self, val_error: float, epoch: int | None = None) -> bool:
        """Record the validation error of ``epoch`` (1-based; needed with milestones); returns
        True when the lr was just dropped."""
        improved = val_error < self.best - self.min_delta
        if improved:
            self.best, self.bad_epochs = val_error, 0
        else:
            self.bad_epochs += 1
        if self.milestones:
            if epoch is None:
                raise ValueError("a milestone schedule steps with the epoch number")
            drop = epoch in self.milestones
        else:
            drop = not improved and self.bad_epochs > self.patience
        if drop and self.drops < self.max_drops:
            self.lr *= self.factor
            self.drops += 1
            self.bad_epochs = 0
            return True
        return False

    @property
    def exhausted(self) -> bool:
        """Every drop used and validation again without progress for more than ``patience``
        epochs: training has converged under this schedule."""
        return self.drops >= self.max_drops and self.bad_epochs > self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "best": self.best if math.isfinite(self.best) else None,
                "bad_epochs": self.bad_epochs, "drops": self.drops}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.lr, self.bad_epochs, self.drops = sd["lr"], sd["bad_epochs"], sd["drops"]
        self.best = math.inf if sd["best"] is None else sd["best"]


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model of ``cfg``, its first ``freeze_layers`` trunk convs frozen."""
    model = get_model(cfg.model, num_classes=num_classes, **_model_kwargs(cfg))
    if getattr(model, "fixed_input_size", None) is not None and (
            cfg.size_range is not None or len(set(cfg.sizes)) > 1):
        raise ValueError(f"{cfg.model} has no SPP: its fc6 needs one fixed input size, but "
                         f"training sizes are {cfg.size_range or cfg.sizes}; use an SPP "
                         "variant (e.g. zf5_spp, mobilenet_v2_spp) for multi-size training")
    if cfg.full_image and not getattr(model, "has_spp", False):
        raise ValueError(f"{cfg.model} has no SPP (a fixed pool5 takes one input size); "
                         "--full-image needs an SPP head (e.g. zf5_spp, mobilenet_v2_spp, "
                         "mobilenet_v2_gap)")
    freeze_trunk(model, cfg.freeze_layers)
    return model


def freeze_trunk(model: nn.Module, n: int) -> list[nn.Conv2d]:
    """Stop training the first ``n`` conv layers of ``model.features`` (in the order they run);
    returns them."""
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]
    if n > len(convs):
        raise ValueError(f"freeze_layers {n}: {getattr(model, 'name', 'the model')} has only "
                         f"{len(convs)} conv layers in its trunk")
    for conv in convs[:n]:
        for p in conv.parameters():
            p.requires_grad_(False)
    return convs[:n]


def _model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """What the registry builder of ``cfg.model`` takes (kept in checkpoints to rebuild it)."""
    kw: dict[str, Any] = {"fc_dim": cfg.fc_dim, "dropout": cfg.dropout}
    if cfg.model.startswith("mobilenet_v2_"):
        kw["weights"] = str(Path(cfg.weights).resolve())
        head = cfg.model[len("mobilenet_v2_"):]
        if head == "spp":
            kw["levels"] = list(cfg.levels)
        elif head == "fixed":
            kw["input_size"] = cfg.crop_size
        return kw
    kw["width_mult"] = cfg.width_mult
    # levels for SPP nets; the fixed input size (= the crop size) for no-SPP baselines
    if cfg.model.endswith("_spp"):
        kw["levels"] = list(cfg.levels)
    else:
        kw["input_size"] = cfg.crop_size
    return kw


def model_meta(cfg: TrainConfig, classes: list[str]) -> dict[str, Any]:
    return {"arch": cfg.model, "num_classes": len(classes), "classes": classes,
            "model_kwargs": _model_kwargs(cfg),
            "input": {"mean": cfg.mean, "input_scale": cfg.input_scale, "resize": cfg.resize,
                      "crop_size": cfg.crop_size}}


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The trunk at ``lr * trunk_lr_mult``, the head at ``lr``; frozen parameters left out."""
    if cfg.trunk_lr_mult == 1.0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr_mult": 1.0}]
    trunk = {id(p) for p in model.features.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) in trunk and p.requires_grad],
               "lr_mult": cfg.trunk_lr_mult},
              {"params": [p for p in model.parameters()
                          if id(p) not in trunk and p.requires_grad], "lr_mult": 1.0}]
    return [g for g in groups if g["params"]]


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class Split:
    samples: list[Sample]
    images: DecodedImages


def make_batch(split: Split, indices: np.ndarray, cfg: TrainConfig, epoch: int, size: int,
               train: bool) -> tuple[Tensor, Tensor, int]:
    """Images ``indices`` of ``split`` as a ``(B, 3, size, size)`` batch.

    Training: a ``crop_size`` crop (centre or a corner, or random), flip, lighting, then resized to
    ``size`` if it differs (multi-size: the same content at a lower resolution). Evaluation: the
    centre crop. Returns ``(images, labels, skipped)``, ``skipped`` counting undecodable files.
    """
    tensors, labels, skipped = [], [], 0
    c = cfg.crop_size if train else min(cfg.crop_size, cfg.resize)
    for idx in indices.tolist():
        img = split.images.load(idx)
        if img is None:
            skipped += 1
            continue
        if train:
            rng = np.random.default_rng([cfg.seed, epoch, idx])
            if cfg.crop_mode == "corners":
                patch = crop(img, c, CROP_POSITIONS[int(rng.integers(len(CROP_POSITIONS)))])
            else:
                y = int(rng.integers(img.shape[0] - c + 1))
                x = int(rng.integers(img.shape[1] - c + 1))
                patch = img[y:y + c, x:x + c]
            if cfg.flip and rng.random() < 0.5:
                patch = patch[:, ::-1]
            if cfg.lighting > 0:
                patch = lighting(patch, rng, cfg.lighting)
        else:
            patch = crop(img, c, "center")
        tensors.append(to_tensor(patch, cfg.mean, cfg.input_scale))
        labels.append(split.samples[idx].label)
    if not tensors:
        return torch.empty(0, 3, size, size), torch.empty(0, dtype=torch.long), skipped
    x = torch.stack(tensors)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
    return x.contiguous(memory_format=torch.channels_last), torch.tensor(labels), skipped


def full_max_side(cfg: TrainConfig, size: int) -> int:
    return cfg.full_max_side or 2 * size


def make_full_batch(split: Split, indices: np.ndarray, cfg: TrainConfig, epoch: int, size: int,
                    train: bool) -> tuple[Tensor, Tensor, Tensor, int]:
    """Whole images ``indices`` of ``split`` in one zero-padded batch (``--full-image``).

    Each image at shorter side ``size`` and its own aspect ratio (longer side capped by
    ``full_max_side``); training adds the flip and colour noise of :func:`make_batch` (from the
    same ``(seed, epoch, index)`` generator). Returns ``(images (B, 3, H, W), image_sizes
    (B, 2), labels, skipped)``."""
    tensors, labels, skipped = [], [], 0
    for idx in indices.tolist():
        img = split.images.load(idx)
        if img is None:
            skipped += 1
            continue
        img = ensure_min_size(resize_full(img, size, full_max_side(cfg, size)),
                              split.images.min_size)
        if train:
            rng = np.random.default_rng([cfg.seed, epoch, idx])
            if cfg.flip and rng.random() < 0.5:
                img = img[:, ::-1]
            if cfg.lighting > 0:
                img = lighting(img, rng, cfg.lighting)
        tensors.append(to_tensor(img, cfg.mean, cfg.input_scale))
        labels.append(split.samples[idx].label)
    if not tensors:
        return (torch.empty(0, 3, size, size), torch.empty(0, 2, dtype=torch.long),
                torch.empty(0, dtype=torch.long), skipped)
    x, sizes = pad_batch(tensors)
    return x.contiguous(memory_format=torch.channels_last), sizes, torch.tensor(labels), skipped


def _batch(split: Split, indices: np.ndarray, cfg: TrainConfig, epoch: int, size: int,
           train: bool) -> tuple[Tensor, Tensor | None, Tensor, int]:
    """``(images, image_sizes or None, labels, skipped)``: crops, or whole images."""
    if cfg.full_image:
        return make_full_batch(split, indices, cfg, epoch, size, train)
    x, y, skipped = make_batch(split, indices, cfg, epoch, size, train)
    return x, None, y, skipped


def _forward(model: nn.Module, x: Tensor, sizes: Tensor | None, device: torch.device) -> Tensor:
    return model(x.to(device)) if sizes is None else model(x.to(device), sizes)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, cfg: TrainConfig, info: DistInfo,
             device: torch.device, batch_size: int = 64) -> dict[str, float]:
    """Loss / top-1 / top-5 over a split (sharded across processes): the centre crop, or with
    ``full_image`` whole images at the first training size (padded batches)."""
    model.eval()
    idx = np.arange(len(split.samples))[info.rank::info.world_size]
    loss_sum, c1, c5, n, skipped = 0.0, 0, 0, 0, 0
    size = cfg.sizes[0] if cfg.full_image else min(cfg.crop_size, cfg.resize)
    for s in range(0, len(idx), batch_size):
        x, sizes, y, sk = _batch(split, idx[s:s + batch_size], cfg, 0, size, train=False)
        skipped += sk
        if len(y) == 0:
            continue
        out = _forward(model, x, sizes, device)
        loss_sum += float(F.cross_entropy(out, y.to(device), reduction="sum"))
        t1, t5 = topk_correct(out.cpu(), y, (1, 5))
        c1, c5, n = c1 + t1, c5 + t5, n + len(y)
    loss_sum, c1, c5, n, skipped = all_reduce_sum([loss_sum, c1, c5, n, skipped], info)
    n = max(n, 1)
    return {"loss": loss_sum / n, "top1": c1 / n, "top5": c5 / n, "n": int(n),
            "skipped": int(skipped)}


# ---------------------------------------------------------------------------------------------
# training


def _save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
          sched: PlateauSchedule, meta: dict[str, Any], state: dict[str, Any]) -> None:
    tensors = with_prefix("model.", model.state_dict())
    bad = [k for k, v in model.state_dict().items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # a NaN checkpoint saved once would be resumed, evaluated and served
        raise TrainingDiverged(f"train-cls: the weights hold NaN/inf ({', '.join(bad[:3])}); "
                               f"not saving {path.name}. Likely cause: the learning rate is too "
                               "high; lower --lr")
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    save_checkpoint(path, tensors, {**meta, **state, "scheduler": sched.state_dict(),
                                    "optimizer": opt_meta})


def _check_resume(meta: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    for key in ("arch", "num_classes", "classes", "model_kwargs"):
        if meta.get(key) != expected[key]:
            what = {"arch": "architecture", "num_classes": "class count", "classes": "class list",
                    "model_kwargs": "model options"}[key]
            theirs, ours = meta.get(key), expected[key]
            if key == "classes":
                theirs, ours = f"{len(theirs or [])} classes", f"{len(ours)} classes"
            raise CheckpointError(f"cannot resume from {path}: its {what} is {theirs!r} but this "
                                  f"run's is {ours!r}")


def plot_curves(metrics: list[dict[str, Any]], path: Path) -> None:
    from ..utils.plotting import pyplot

    plt = pyplot()

    ep = [m["epoch"] + 1 for m in metrics]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(ep, [m["train_loss"] for m in metrics], label="train")
    a.plot(ep, [m["val_loss"] for m in metrics], label="val")
    a.set_xlabel("epoch")
    a.set_ylabel("cross-entropy")
    a.legend()
    b.plot(ep, [100 * m["train_top1"] for m in metrics], label="train top-1")
    b.plot(ep, [100 * m["val_top1"] for m in metrics], label="val top-1")
    b.plot(ep, [100 * m["val_top5"] for m in metrics], label="val top-5", linestyle="--")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy (%)")
    b.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


# what a train-cls run writes; --force deletes these before starting over
RUN_OUTPUTS = ("last.safetensors", "best.safetensors", "metrics.jsonl", "results.json",
               "curves.png", "dataset.json")
# fields that may change between a run and its resume without changing what it computes
RUNTIME_FIELDS = ("progress", "threads", "device", "output_dir", "checkpoint_every", "epochs",
                  "cache_images", "extra")


def _lock_output_dir(cfg: TrainConfig, info: DistInfo) -> RunLock | None:
    """The run folder's lock, held by the main process for the run's lifetime (every process
    learns whether it was taken, so all of them stop together when another run holds it)."""
    out = check_output_dir(cfg.output_dir)
    lock, err = None, None
    if info.is_main:
        try:
            lock = RunLock(out, "train-cls").acquire()
        except RunFolderError as e:
            err = e
    if all_reduce_sum([1.0 if err else 0.0], info)[0]:
        raise err if err is not None else RunFolderError(f"{out} is in use by another run")
    return lock


def _claim_output_dir(cfg: TrainConfig, resume: bool, force: bool, info: DistInfo) -> None:
    """Refuse a folder that holds another kind of run, or another run without ``--resume``
    or ``--force``; with ``--force`` delete the old run's outputs. Writes nothing else."""
    out = check_output_dir(cfg.output_dir)
    old = refuse_other_kind(out, "train-cls")
    if resume:
        if not (out / "last.safetensors").is_file():
            raise CheckpointError(f"--resume: no checkpoint at {out / 'last.safetensors'}")
        return
    present = [n for n in RUN_OUTPUTS if (out / n).exists()]
    if not present:
        return
    if not force:
        raise RunFolderError(
            f"{out} already holds a train-cls run ({', '.join(present[:3])}) with "
            f"{describe_diff(old, json.loads(json.dumps(cfg.to_json())), ('progress',))}; "
            "--resume continues it, --force starts over, or use another --output-dir")
    if info.is_main:
        gone = remove_outputs(out, RUN_OUTPUTS)
        log.warning("--force: removed the earlier run's %s from %s", ", ".join(gone), out)
    barrier(info)


def _fresh_epoch_stats() -> dict[str, float]:
    return {"loss_sum": 0.0, "correct": 0, "seen": 0, "time": 0.0, "skipped": 0}


@dataclass
class _Run:
    """One training run's state, passed between the named steps of :func:`train`."""

    cfg: TrainConfig
    info: DistInfo
    device: torch.device
    out: Path
    classes: list[str]
    empty_classes: list[str]
    splits: list[Split]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    sched: PlateauSchedule
    meta: dict[str, Any]
    start_epoch: int = 0
    start_step: int = 0
    best_top1: float = -1.0
    epoch_stats: dict[str, float] = field(default_factory=_fresh_epoch_stats)
    history: list[dict[str, Any]] = field(default_factory=list)
    ddp: nn.Module | None = None
    order: np.ndarray | None = None  # training images in the epoch order's pool
    landscape: np.ndarray | None = None  # full_image: order's images as wide as high or wider
    n_steps: int = 0
    guard: LossGuard | None = None  # stops the run on a non-finite or diverging loss

    @property
    def ckpt_last(self) -> Path:
        return self.out / "last.safetensors"

    @property
    def ckpt_best(self) -> Path:
        return self.out / "best.safetensors"

    def save(self, path: Path, state: dict[str, Any]) -> None:
        state = {**state, "loss_guard": self.guard.state_dict() if self.guard else None}
        _save(path, self.model, self.optimizer, self.sched, self.meta, state)


def _set_up(cfg: TrainConfig, resume: bool, force: bool, info: DistInfo,
            device: torch.device) -> _Run:
    """Claim the folder, read and split the data, build the model, optimizer and schedule."""
    _claim_output_dir(cfg, resume, force, info)
    folder = ClassFolder.scan(cfg.data)
    parts = split_per_class(folder.samples, list(cfg.split), cfg.seed)
    if not parts[0] or not parts[1]:
        raise ValueError(f"the split {cfg.split} leaves an empty train or val set")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, len(folder.classes))
    # crops need the crop to fit; whole images only what the net needs (make_full_batch)
    min_size = model.min_input_size if cfg.full_image else max(model.min_input_size,
                                                                cfg.crop_size)
    splits = [Split(p, DecodedImages(p, cfg.resize, min_size, cfg.cache_images)) for p in parts]
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(_param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    lr_hint = f"--lr {cfg.lr:g}" + (f", trunk x{cfg.trunk_lr_mult:g}"
                                     if cfg.trunk_lr_mult != 1 else "")
    return _Run(cfg, info, device, Path(cfg.output_dir), folder.classes, folder.empty_classes,
                splits, model, optimizer, PlateauSchedule(cfg.lr, cfg.lr_patience, cfg.lr_drops,
                                                milestones=cfg.lr_milestones),
                model_meta(cfg, folder.classes),
                guard=LossGuard("train-cls", len(folder.classes), lr_hint))


def _resume(run: _Run) -> None:
    """Continue exactly where ``last.safetensors`` stopped: weights, optimizer, schedule, RNG,
    epoch, step and the epoch's running totals."""
    if not run.ckpt_last.exists():
        raise CheckpointError(f"--resume: no checkpoint at {run.ckpt_last}")
    tensors, saved = load_checkpoint(run.ckpt_last)
    _check_resume(saved, run.meta, run.ckpt_last)
    _load_weights(run.model, tensors, run.ckpt_last)
    optimizer_from_flat(run.optimizer, tensors, saved["optimizer"])
    run.sched.load_state_dict(saved["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    run.start_epoch, run.start_step = saved["epoch"], saved["step"]
    run.best_top1, run.epoch_stats = saved["best_top1"], saved["epoch_stats"]
    run.guard.load_state_dict(saved.get("loss_guard"))
    if not run.info.is_main:  # rank 0 carries the running totals of all processes
        run.epoch_stats = {k: 0 * v for k, v in run.epoch_stats.items()}
    if run.info.is_main:
        log.info("resuming from %s at epoch %d, step %d", run.ckpt_last, run.start_epoch + 1,
                 run.start_step)


def _start_writing(run: _Run, resume: bool) -> None:
    """Validated (and a resume checked): write the config, keep the metrics of the epochs
    before the resume point, record the dataset, decode the images, fix the epoch pool."""
    cfg, info, out = run.cfg, run.info, run.out
    if info.is_main:
        write_run_config(out, "train-cls", cfg.to_json(), RUNTIME_FIELDS)
        metrics_path = out / "metrics.jsonl"
        if metrics_path.exists():
            lines = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
            run.history = [m for m in lines if m["epoch"] < run.start_epoch] if resume else []
            metrics_path.write_text("".join(json.dumps(m) + "\n" for m in run.history))
        (out / "dataset.json").write_text(json.dumps({
            "classes": run.classes, "empty_classes": run.empty_classes,
            "counts": {p: len(s.samples) for p, s in zip(("train", "val", "test"), run.splits)},
        }, indent=2) + "\n")
    if cfg.cache_images:
        for name, s in zip(("train", "val", "test"), run.splits[:2]):
            s.images.preload(progress=cfg.progress and info.is_main, desc=f"decoding {name}")
    ids = [run.device.index] if run.device.type == "cuda" else None
    run.ddp = (nn.parallel.DistributedDataParallel(run.model, device_ids=ids) if info.enabled
               else run.model)
    # with every image decoded up front, undecodable files leave the epoch order, so every
    # batch has exactly batch_size images (and splits evenly over processes)
    train_split = run.splits[0]
    run.order = np.array([i for i in range(len(train_split.samples))
                          if not cfg.cache_images or train_split.images.load(i) is not None],
                         dtype=np.int64)
    if cfg.full_image:  # batches grouped by orientation: less padding
        shapes = [train_split.images.load(int(i)) for i in run.order]
        run.landscape = np.array([im is None or im.shape[1] >= im.shape[0] for im in shapes])
    run.n_steps = len(run.order) // cfg.batch_size
    if run.n_steps == 0:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the training set "
                         f"({len(run.order)} images)")


def _train_epoch(run: _Run, epoch: int) -> int:
    """One epoch of SGD (from the resume step in the first); returns the epoch's input size.
    Saves ``last.safetensors`` every ``checkpoint_every`` steps."""
    from tqdm import tqdm

    cfg, info = run.cfg, run.info
    size = cfg.epoch_size(epoch)
    for g in run.optimizer.param_groups:
        g["lr"] = run.sched.lr * g.get("lr_mult", 1.0)
    pick = np.random.default_rng([cfg.seed, epoch]).permutation(len(run.order))
    perm = run.order[pick]
    if run.landscape is not None:
        perm = group_by_orientation(perm, run.landscape[pick], cfg.batch_size,
                                    np.random.default_rng([cfg.seed, epoch, 1]))
    run.ddp.train()
    first = run.start_step if epoch == run.start_epoch else 0
    if first == 0:
        run.epoch_stats = _fresh_epoch_stats()
    stats = run.epoch_stats
    local_b = cfg.batch_size // info.world_size
    bar = tqdm(range(first, run.n_steps), desc=f"epoch {epoch + 1}/{cfg.epochs} @{size}px",
               disable=not (cfg.progress and info.is_main), leave=False)
    for step in bar:
        t0 = time.perf_counter()
        batch = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        mine = batch[info.rank * local_b:(info.rank + 1) * local_b]
        x, sizes, y, skipped = _batch(run.splits[0], mine, cfg, epoch, size, train=True)
        if len(y):
            logits = _forward(run.ddp, x, sizes, run.device)
            loss = F.cross_entropy(logits, y.to(run.device))
            # every process sees the same value, so all of them stop at the same step
            value = all_reduce_sum([loss.item()], info)[0] / info.world_size
            run.guard.step(value, f"epoch {epoch + 1}, step {step + 1}")
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            stats["loss_sum"] += loss.item() * len(y)
            stats["correct"] += topk_correct(logits.detach().cpu(), y, (1,))[0]
            stats["seen"] += len(y)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{run.sched.lr:g}")
        stats["skipped"] += skipped
        stats["time"] += time.perf_counter() - t0
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and (
                step + 1) < run.n_steps:
            # the epoch's running totals over all processes; on resume rank 0 carries them
            # and the others start from zero
            keys = ("loss_sum", "correct", "seen", "time", "skipped")
            totals = dict(zip(keys, all_reduce_sum([stats[k] for k in keys], info)))
            totals["time"] = stats["time"]
            if info.is_main:
                run.save(run.ckpt_last, {"epoch": epoch, "step": step + 1,
                                         "best_top1": run.best_top1, "epoch_stats": totals})
            barrier(info)
    return size


def _end_epoch(run: _Run, epoch: int, size: int) -> None:
    """Validate, step the plateau schedule, append the epoch's metrics, plot, checkpoint."""
    cfg, info, stats = run.cfg, run.info, run.epoch_stats
    sums = all_reduce_sum([stats["loss_sum"], stats["correct"], stats["seen"],
                           stats["skipped"]], info)
    val = evaluate(run.model, run.splits[1], cfg, info, run.device)
    seen = max(sums[2], 1)
    record = {"epoch": epoch, "size": size, "lr": run.sched.lr,
              "train_loss": sums[0] / seen, "train_top1": sums[1] / seen,
              "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
              "images_per_s": sums[2] / max(stats["time"], 1e-9),
              "epoch_time_s": stats["time"], "skipped_files": int(sums[3])}
    run.guard.window(record["train_loss"], f"epoch {epoch + 1}")
    record["lr_dropped_after"] = run.sched.step(1.0 - val["top1"], epoch + 1)
    is_best = val["top1"] > run.best_top1
    run.best_top1 = max(run.best_top1, val["top1"])
    if info.is_main:
        run.history.append(record)
        with (run.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        log.info("epoch %d/%d size %d: train loss %.4f top-1 %.2f%% | val top-1 %.2f%% "
                 "top-5 %.2f%% | %.1f img/s%s", epoch + 1, cfg.epochs, size,
                 record["train_loss"], 100 * record["train_top1"], 100 * val["top1"],
                 100 * val["top5"], record["images_per_s"],
                 f" | {int(sums[3])} undecodable files skipped" if sums[3] else "")
        plot_curves(run.history, run.out / "curves.png")
        state = {"epoch": epoch + 1, "step": 0, "best_top1": run.best_top1,
                 "epoch_stats": _fresh_epoch_stats()}
        if is_best:
            run.save(run.ckpt_best, state)
        run.save(run.ckpt_last, state)
    barrier(info)


def train(cfg: TrainConfig, resume: bool = False, force: bool = False) -> dict[str, Any]:
    """Train per ``cfg``; returns the final results (also written to ``results.json``).

    ``resume`` continues the run in ``cfg.output_dir`` exactly; ``force`` deletes a finished or
    unfinished run there first. Without either, a folder that holds a run is refused; a folder
    another run is writing (its lock) is refused either way.

    ``cfg.recipe == "auto"`` takes the fine-tuning recipe when ``cfg.weights`` is given (fields
    left at the paper's defaults get the recipe's values; see :func:`with_recipe`)."""
    cfg = with_recipe(cfg) if cfg.recipe == "auto" else cfg
    cfg.validate()
    device = resolve_device(cfg.device)
    info = init_distributed(device)
    device = process_device(device, info)
    if cfg.batch_size % info.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} must divide evenly over "
                         f"{info.world_size} processes")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    record_stage_threads("train")
    lock = None
    try:
        lock = _lock_output_dir(cfg, info)
        if info.is_main and cfg.recipe == "finetune":
            log.info("pretrained weights: the fine-tuning recipe (docs/classification.md): %s "
                     "(flags and --set override each)", ", ".join(
                         f"{k} {getattr(cfg, k)}" for k in RECIPES["finetune"]))
        run = _set_up(cfg, resume, force, info, device)
        if resume:
            _resume(run)
        _start_writing(run, resume)
        for epoch in range(run.start_epoch, cfg.epochs):
            if cfg.stop_when_done and run.sched.exhausted:
                log.info("stopping after epoch %d: the lr was divided %d times and validation "
                         "has not improved since", epoch, run.sched.drops)
                break
            size = _train_epoch(run, epoch)
            _end_epoch(run, epoch, size)
        return _finish(cfg, run.splits, info, device, run.out, run.ckpt_best, run.history)
    except BaseException:
        if lock is not None:  # a run refused before writing anything leaves no folder behind
            lock.abandon()
            lock = None
        raise
    finally:
        if lock is not None:
            lock.release()
        shutdown(info)


def _finish(cfg: TrainConfig, splits: list[Split], info: DistInfo, device: torch.device,
            out: Path, ckpt_best: Path, history: list[dict[str, Any]]) -> dict[str, Any]:
    best_model, _ = load_model(ckpt_best) if ckpt_best.exists() else (None, None)
    results: dict[str, Any] = {"model": cfg.model, "epochs_run": len(history)}
    if best_model is not None:
        best_model = best_model.to(device).to(memory_format=torch.channels_last)
        results["best_val"] = evaluate(best_model, splits[1], cfg, info, device)
        if len(splits) > 2 and splits[2].samples:
            results["test"] = evaluate(best_model, splits[2], cfg, info, device)
    failed = sorted(str(p) for s in splits for p in s.images.failed)
    results["undecodable_files"] = failed
    if failed and info.is_main:
        log.warning("%d file(s) could not be decoded and were skipped: %s", len(failed),
                    ", ".join(failed[:10]) + (" ..." if len(failed) > 10 else ""))
    if info.is_main:
        write_results(out / "results.json", results, {"seed": cfg.seed}, inputs=[cfg.weights])
    return results

