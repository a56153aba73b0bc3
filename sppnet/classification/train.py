"""Training SPP-nets (and their no-SPP baselines) on a folder of photos: single-size, multi-size,
on one process or many (``torchrun``), resumable exactly. The loop and its steps (set-up ->
resume -> epochs -> finish) are here; the parts are :mod:`.schedule` (the learning rate),
:mod:`.model_setup` (the net, frozen layers, parameter groups), :mod:`.batches` (crops, whole
images, evaluation), :mod:`.checkpoints` (exact-resume checkpoints, curves) and
:func:`sppnet.utils.run_dir.claim_outputs` (who owns the run folder).

Determinism: the batch order of an epoch comes from ``(seed, epoch)``, each sample's augmentation
from ``(seed, epoch, index)``, and dropout from torch's RNG, whose state every checkpoint keeps.
So a run resumed from a checkpoint, or split over several processes, follows the same path as an
uninterrupted single-process run (up to float summation order across processes).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.folder import ClassFolder, DecodedImages, group_by_orientation, split_per_class
from ..evaluation.topk import topk_correct
from ..models.backbone import load_model, load_weights
from ..utils import distributed, run_dir
from ..utils.checkpoint import CheckpointError, load_checkpoint, optimizer_from_flat
from ..utils.device import resolve_device
from ..utils.distributed import DistInfo, all_reduce_sum
from ..utils.loss_guard import LossGuard
from ..utils.provenance import record_stage_threads, write_results
from .batches import Split, batch_of, evaluate, forward, make_batch, make_full_batch
from .checkpoints import check_resume, plot_curves, save_run_checkpoint
from .config import RECIPES, TrainConfig, with_recipe
from .model_setup import build_model, model_meta, param_groups
from .schedule import PlateauSchedule

# the names a run's parts go by here too (their modules: schedule, model_setup, batches)
__all__ = ["PlateauSchedule", "train", "build_model", "load_model", "make_batch",
           "make_full_batch", "evaluate", "Split"]

log = logging.getLogger(__name__)

# what a train-cls run writes; --force deletes these before starting over
RUN_OUTPUTS = ("last.safetensors", "best.safetensors", "metrics.jsonl", "results.json",
               "curves.png", "dataset.json")
# fields that may change between a run and its resume without changing what it computes
RUNTIME_FIELDS = ("progress", "threads", "device", "output_dir", "checkpoint_every", "epochs",
                  "cache_images", "extra")


def _claim_output_dir(cfg: TrainConfig, resume: bool, force: bool, info: DistInfo) -> None:
    """The ownership rule (:func:`sppnet.utils.run_dir.claim_outputs`): refuse a folder that
    holds another kind of run, or another run without ``--resume`` or ``--force``; with
    ``--force`` the main process deletes the old run's outputs. Writes nothing else."""
    out = run_dir.check_output_dir(cfg.output_dir)
    if resume:
        run_dir.refuse_other_kind(out, "train-cls")
        if not (out / "last.safetensors").is_file():
            raise CheckpointError(f"--resume: no checkpoint at {out / 'last.safetensors'}")
        return
    run_dir.claim_outputs(out, "train-cls", cfg.to_json(), RUN_OUTPUTS, force, ("progress",),
                  reuse_same=False, remove=info.is_main,
                  advice="--resume continues it, --force starts over, or use another "
                         "--output-dir")
    distributed.barrier(info)


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
        save_run_checkpoint(path, self.model, self.optimizer, self.sched, self.meta, state)


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
    optimizer = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum,
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
    check_resume(saved, run.meta, run.ckpt_last)
    load_weights(run.model, tensors, run.ckpt_last)
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
    if len(run.splits[0].samples) < cfg.batch_size:  # a mistake: refused before any write
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the training set "
                         f"({len(run.splits[0].samples)} images)")
    if info.is_main:
        run_dir.write_run_config(out, "train-cls", cfg.to_json(), RUNTIME_FIELDS)
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
        x, sizes, y, skipped = batch_of(run.splits[0], mine, cfg, epoch, size, train=True)
        if len(y):
            logits = forward(run.ddp, x, sizes, run.device)
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
            distributed.barrier(info)
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
    distributed.barrier(info)


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
    info = distributed.init_distributed(device)
    device = distributed.process_device(device, info)
    if cfg.batch_size % info.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} must divide evenly over "
                         f"{info.world_size} processes")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    record_stage_threads("train")
    lock = None
    try:
        lock = run_dir.lock_for_job(run_dir.check_output_dir(cfg.output_dir), "train-cls", info)
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
        results = _finish(cfg, run.splits, info, device, run.out, run.ckpt_best, run.history)
        # every rank reaches the end before any tears the process group down (a rank that
        # destroyed it while rank 0 still wrote results.json could abort in gloo's teardown)
        distributed.barrier(info)
        return results
    except BaseException:
        if lock is not None:  # a run refused before writing anything leaves no folder behind
            lock.abandon()
            lock = None
        raise
    finally:
        if lock is not None:
            lock.release()
        distributed.shutdown(info)


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

