"""End-to-end fine-tuning: the trunk's upper conv layers trained together with the head, through
the window pyramid (beyond the paper).

Shapes: B windows per mini-batch, D pooled dims, K classes (+1 background), C map channels.

SPP-net fine-tunes only the fc layers: its windows come from many images, and training a conv
layer would need every one of those images' activations (paper section 4.1; "hard, but not
impossible"). Fast R-CNN (Girshick 2015) removed the limit with image-centric sampling — a
mini-batch is ``ft_images`` images (2) and ``ft_batch / ft_images`` windows (64) of each, so
the conv pass of an image is shared by its windows — and one multi-task loss. This module does
the same through SPP-net's own multi-level window pyramid with the paper's exact bins
(:func:`sppnet.ops.spp_roi_pool` and its backward):

- the last ``e2e_convs`` convolutions the trunk runs train, the others are frozen; batch-norm
  layers stay in inference mode (their statistics frozen, as Fast R-CNN's);
- each image is flipped with probability 1/2 (``flip``) and taken at one of ``scales`` (drawn
  uniformly; Fast R-CNN's multi-scale training), 25% foreground windows (IoU >= 0.5);
- loss: (K+1)-way log loss + ``bbox_loss_weight`` x smooth-L1 (beta 1) on the class-specific
  box deltas of the foreground windows, their targets normalised by the training set's mean
  and standard deviation (Fast R-CNN's lambda = 1), summed over the batch's foreground windows
  and divided by the batch size;
- SGD as the paper's fine-tuning (``ft_lr``, step ``ft_lr_step``, momentum, weight decay);
  resumable exactly (weights, optimizer, RNG), and data-parallel under ``torchrun`` (each rank
  draws its own images; gradients averaged).
"""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.decode import decode_image
from ..data.transforms import resize_to, to_tensor
from ..data.voc import VOCDataset
from ..models.backbone import BackboneSpec
from ..ops import BoxCoder, spp_roi_pool
from ..utils.checkpoint import (
    CheckpointError,
    resume_training_state,
    save_training_state,
    strip_prefix,
    with_prefix,
)
from ..utils.distributed import DistInfo, shard
from ..utils.loss_guard import LossGuard
from ..utils.lru import ByteLRU
from .config import DetConfig
from .finetune import LOG_EVERY, keep_metrics_up_to, sample_windows
from .head import DetectionHead
from .scales import scaled_sizes
from .targets import WindowSet

__all__ = ["trunk_convs", "set_trainable", "box_targets", "target_stats", "multitask_loss",
           "finetune_e2e", "E2E_CKPT", "E2E_CKPT_EVERY"]

log = logging.getLogger(__name__)
E2E_CKPT = "e2e_last.safetensors"
E2E_CKPT_EVERY = 250  # iterations per resumable checkpoint
SMOOTH_L1_BETA = 1.0  # Fast R-CNN: smooth L1 with a quadratic zone of |x| < 1


def trunk_convs(backbone: nn.Module, probe: int = 64) -> list[nn.Module]:
    """The convolutions ``forward_features`` runs, in the order it runs them (found by running
    it once on a ``probe`` x ``probe`` input: a trunk may hold layers it never calls, such as
    an ImageNet classifier)."""
    seen: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, *_: seen.append(mod))
             for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            p = next(backbone.parameters())
            backbone.forward_features(torch.zeros(1, 3, probe, probe, dtype=p.dtype,
                                                  device=p.device))
    finally:
        for h in hooks:
            h.remove()
    out: list[nn.Module] = []
    for m in seen:
        if all(m is not o for o in out):
            out.append(m)
    return out


def set_trainable(backbone: nn.Module, n: int) -> list[nn.Parameter]:
    """Freeze the trunk except its last ``n`` convolutions (all of them when it runs fewer,
    with a warning: the default of 10 is for deeper trunks than ZF-5); returns their
    parameters."""
    convs = trunk_convs(backbone)
    if n > len(convs):
        log.warning("e2e_convs=%d, but the trunk runs only %d convolutions: all %d train", n,
                    len(convs), len(convs))
        n = len(convs)
    backbone.requires_grad_(False)
    params: list[nn.Parameter] = []
    for conv in convs[len(convs) - n:] if n else []:
        for p in conv.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def box_targets(ws: WindowSet, gt_boxes: np.ndarray, rows: np.ndarray,
                coder: BoxCoder) -> Tensor:
    """``(len(rows), 4)`` deltas from each window to its best ground truth (meaningful for the
    foreground rows)."""
    if len(rows) == 0 or len(gt_boxes) == 0:
        return torch.zeros(len(rows), 4)
    boxes = torch.from_numpy(np.ascontiguousarray(ws.boxes[rows], np.float32))
    gts = torch.from_numpy(np.ascontiguousarray(gt_boxes[ws.gt_index[rows]], np.float32))
    return coder.encode(gts, boxes)


def target_stats(windows: Sequence[WindowSet], gts: Sequence[np.ndarray], fg_iou: float,
                 coder: BoxCoder) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation ``(4,)`` of the box targets of every foreground window
    (Fast R-CNN normalises the regression targets by them)."""
    rows = [box_targets(ws, g, np.nonzero(ws.max_iou >= fg_iou)[0], coder)
            for ws, g in zip(windows, gts)]
    t = torch.cat(rows).double() if rows else torch.zeros(0, 4, dtype=torch.float64)
    if len(t) < 2:
        return torch.zeros(4), torch.ones(4)
    return t.mean(0).float(), t.std(0).clamp_min(1e-3).float()


class _Images:
    """Training images decoded once and resized per (scale, flip), held up to a byte budget."""

    def __init__(self, ds: VOCDataset, scales: Sequence[int], spec, budget: int) -> None:
        self.ds, self.scales, self.spec = ds, tuple(scales), spec
        self.held = ByteLRU(budget)

    def tensor(self, i: int, k: int, flip: bool) -> Tensor:
        """The normalised ``(3, H, W)`` input of image ``i`` at scale ``k`` (as
        :func:`features.compute_maps` makes it: flipped, then resized)."""
        img = self.held.get((i, k, flip))
        if img is None:
            a = self.ds[i]
            full = decode_image(a.image_path)
            if flip:
                full = np.ascontiguousarray(full[:, ::-1])
            size = scaled_sizes(full.shape[:2], (self.scales[k],))[0]
            img = torch.from_numpy(np.array(resize_to(full, size)))  # a writable copy
            self.held.put((i, k, flip), img)
        return to_tensor(img.numpy(), self.spec.mean, self.spec.input_scale)


def _lr(cfg: DetConfig, it: int) -> float:
    return cfg.ft_lr * (0.1 if it >= cfg.ft_lr_step else 1.0)


def _state(backbone: nn.Module, head: DetectionHead, trainable: list[nn.Parameter]) -> dict:
    """What a checkpoint holds of the models: the head and the trunk's trained tensors."""
    names = {id(p): n for n, p in backbone.named_parameters()}
    out = with_prefix("head.", head.state_dict())
    out.update({f"trunk.{names[id(p)]}": p.detach() for p in trainable})
    return out


def _resume(backbone, head, opt, trainable, ckpt: Path, metrics: Path, rank: int,
            guard: LossGuard) -> int:
    """The iteration to start from: that of ``e2e_last.safetensors`` (head, the trunk's
    trained tensors, optimizer, this rank's RNG and the loss guard restored), else 0; the
    metrics logged after it dropped (rank 0)."""

    def restore(t: dict[str, Tensor]) -> None:
        head.load_state_dict(strip_prefix("head.", t))
        missing = backbone.load_state_dict(strip_prefix("trunk.", t), strict=False)
        if missing.unexpected_keys:
            raise CheckpointError(f"trunk tensors {missing.unexpected_keys[:3]} do not fit "
                                  "the backbone")
        torch.set_rng_state(t[f"rng.torch.{rank}"] if f"rng.torch.{rank}" in t
                            else t["rng.torch.0"])
        device = next(head.parameters()).device
        if device.type == "cuda" and f"rng.cuda.{rank}" in t:
            torch.cuda.set_rng_state(t[f"rng.cuda.{rank}"], device)

    start = resume_training_state(ckpt, opt, guard, restore, "end-to-end fine-tuning")
    if rank == 0:  # keep the records up to the checkpoint only
        keep_metrics_up_to(metrics, start)
    return start


def _minibatch(backbone: nn.Module, images: _Images, windows: Sequence[WindowSet],
               gts: Sequence[np.ndarray], cfg: DetConfig, usable: list[int],
               rng: np.random.Generator, coder: BoxCoder,
               device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Pooled features ``(B, D)`` through the trunk (with its graph), labels ``(B,)`` and box
    targets ``(B, 4)`` of ``ft_images`` images' windows."""
    per_image = math.ceil(cfg.ft_batch / cfg.ft_images)
    feats, labels, targets = [], [], []
    stride, offset = backbone.feature_stride, backbone.feature_offset
    for i in rng.choice(usable, min(cfg.ft_images, len(usable)), replace=False):
        i = int(i)
        flip = bool(cfg.flip and rng.random() < 0.5)
        k = int(rng.integers(len(cfg.scales)))
        ws = windows[i]
        idx, lab = sample_windows(ws, per_image, cfg.fg_fraction, cfg.fg_iou, cfg.bg_iou_lo,
                                  cfg.bg_iou_hi, rng)
        if not len(idx):
            continue
        a = images.ds[i]
        if flip:
            ws = ws.flipped(a.image_size[1])
            gt = gts[i].copy()
            gt[:, 0], gt[:, 2] = a.image_size[1] - gts[i][:, 2], a.image_size[1] - gts[i][:, 0]
        else:
            gt = gts[i]
        x = images.tensor(i, k, flip).to(device)
        fmap = backbone.forward_features(x[None].contiguous(memory_format=torch.channels_last))
        (sh, sw), (h, w) = scaled_sizes(a.image_size, (cfg.scales[k],))[0], a.image_size
        boxes = torch.from_numpy(np.ascontiguousarray(ws.boxes[idx], np.float32)).to(device)
        boxes = boxes * torch.tensor([sw / w, sh / h, sw / w, sh / h], device=device)
        rois = torch.cat([boxes.new_zeros(len(idx), 1), boxes], 1)
        feats.append(spp_roi_pool(fmap.contiguous(), rois, cfg.levels, stride, offset))
        labels.append(torch.from_numpy(lab))
        targets.append(box_targets(ws, gt, idx, coder))
    return torch.cat(feats), torch.cat(labels).to(device), torch.cat(targets).to(device)


def multitask_loss(logits: Tensor, deltas: Tensor, labels: Tensor, targets: Tensor,
                   weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, log loss, box loss)``: (K+1)-way cross-entropy + ``weight`` x smooth-L1 of the
    foreground windows' deltas of their own class (``deltas (B, K, 4)``, ``targets (B, 4)``
    normalised), summed and divided by the batch size (Fast R-CNN)."""
    cls = F.cross_entropy(logits, labels)
    fg = (labels > 0).nonzero().flatten()
    if len(fg):
        pred = deltas[fg, labels[fg] - 1]  # (F, 4)
        box = F.smooth_l1_loss(pred, targets[fg], beta=SMOOTH_L1_BETA,
                               reduction="sum") / len(labels)
    else:
        box = deltas.sum() * 0.0
    return cls + weight * box, cls, box


def finetune_e2e(backbone: nn.Module, spec: BackboneSpec, head: DetectionHead, ds: VOCDataset,
                 windows: Sequence[WindowSet], cfg: DetConfig, out_dir: Path,
                 progress: bool = True, info: DistInfo | None = None) -> None:
    """Train the head (with its box-delta layer) and the trunk's last ``cfg.e2e_convs``
    convolutions for ``cfg.ft_iters`` iterations; resumable from ``e2e_last.safetensors``.
    Writes ``finetune_metrics.jsonl`` (rank 0). Under ``torchrun`` each rank draws its
    mini-batches from its own share of the images."""
    from tqdm import tqdm

    info = info or DistInfo()
    device = next(head.parameters()).device
    coder = BoxCoder()
    gts = [a.boxes[~a.difficult] for a in ds]
    trainable, params, opt = _set_up(backbone, head, windows, gts, cfg, coder)
    ckpt, metrics = out_dir / E2E_CKPT, out_dir / "finetune_metrics.jsonl"
    guard = LossGuard("end-to-end fine-tuning", head.num_classes + 1,
                      f"ft_lr={cfg.ft_lr:g}; lower it with --set ft_lr=...")
    start = _resume(backbone, head, opt, trainable, ckpt, metrics, info.rank, guard)
    images = _Images(ds, cfg.scales, spec, cfg.map_cache_mb << 20)
    usable = shard([i for i, w in enumerate(windows) if len(w.boxes)], info.rank,
                   info.world_size)
    backbone.eval()  # frozen batch-norm statistics; the trunk has no dropout
    head.train()
    bar = tqdm(range(start, cfg.ft_iters), desc="fine-tune end to end",
               disable=not progress or not info.is_main, initial=start, total=cfg.ft_iters)
    acc = {"loss": 0.0, "cls": 0.0, "box": 0.0, "correct": 0.0, "n": 0.0}
    t0 = time.perf_counter()
    for it in bar:
        rng = np.random.default_rng((cfg.seed, it, info.rank))  # per iteration: resumable
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, it)
        x, y, tgt = _minibatch(backbone, images, windows, gts, cfg, usable, rng, coder, device)
        tgt = (tgt - head.bbox_mean) / head.bbox_std
        logits, deltas = head.logits_and_deltas(x)
        loss, cls, box = multitask_loss(logits, deltas, y, tgt, cfg.bbox_loss_weight)
        guard.step(loss.item(), f"iteration {it + 1}")  # NaN/inf: stop before the step
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if info.enabled:
            _average_gradients(params, info)
        opt.step()
        n = len(y)
        for key, v in (("loss", loss), ("cls", cls), ("box", box)):
            acc[key] += float(v.detach()) * n
        acc["correct"] += float((logits.argmax(1) == y).sum())
        acc["n"] += n
        if (it + 1) % LOG_EVERY == 0 or it + 1 == cfg.ft_iters:
            rec = _record(acc, it, cfg, (time.perf_counter() - t0) / (it + 1 - start))
            guard.window(rec["loss"], f"iterations up to {it + 1}")  # far above its start
            if info.is_main:
                with open(metrics, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['accuracy']:.3f}")
            acc = dict.fromkeys(acc, 0.0)
        if (it + 1) % E2E_CKPT_EVERY == 0 and it + 1 < cfg.ft_iters:
            _checkpoint(ckpt, backbone, head, opt, trainable, it + 1, info, guard)
    bar.close()
    backbone.requires_grad_(False)
    head.eval()


def _set_up(backbone: nn.Module, head: DetectionHead, windows: Sequence[WindowSet],
            gts: list[np.ndarray], cfg: DetConfig, coder: BoxCoder
            ) -> tuple[list[nn.Parameter], list[nn.Parameter], torch.optim.Optimizer]:
    """The head's box-target normalisation (from the training windows), the trunk's trainable
    convolutions, every trained parameter and their SGD optimizer."""
    mean, std = target_stats(windows, gts, cfg.fg_iou, coder)
    head.bbox_mean.copy_(mean)
    head.bbox_std.copy_(std)
    trainable = set_trainable(backbone, cfg.e2e_convs)
    params = list(head.parameters()) + trainable
    opt = torch.optim.SGD(params, lr=cfg.ft_lr, momentum=cfg.ft_momentum,
                          weight_decay=cfg.ft_weight_decay)
    return trainable, params, opt


def _record(acc: dict[str, float], it: int, cfg: DetConfig, seconds: float) -> dict:
    """The metrics line of the iterations up to ``it`` (0-based): mean losses and accuracy,
    the lr, seconds per iteration, the peak memory so far."""
    return {"iteration": it + 1, "loss": acc["loss"] / acc["n"],
            "loss_cls": acc["cls"] / acc["n"], "loss_box": acc["box"] / acc["n"],
            "accuracy": acc["correct"] / acc["n"], "lr": _lr(cfg, it),
            "seconds_per_iteration": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _average_gradients(params: list[nn.Parameter], info: DistInfo) -> None:
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= info.world_size


def _gather(state: Tensor, info: DistInfo) -> list[Tensor]:
    """An RNG state (a CPU byte tensor) from every rank, in rank order (through the device
    NCCL reduces on, where that is the backend)."""
    if not info.enabled:
        return [state]
    import torch.distributed as dist

    dev = (f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu")
    x = state.to(dev)
    out = [torch.empty_like(x) for _ in range(info.world_size)]
    dist.all_gather(out, x)
    return [o.cpu() for o in out]


def _checkpoint(path: Path, backbone, head, opt, trainable, iteration: int,
                info: DistInfo, guard: LossGuard) -> None:
    """Every rank's RNG states (torch's, and CUDA's where the head is) are gathered; rank 0
    writes."""
    device = next(head.parameters()).device
    states = {"torch": _gather(torch.get_rng_state(), info)}
    if device.type == "cuda":  # dropout on the GPU draws from its generator
        states["cuda"] = _gather(torch.cuda.get_rng_state(device), info)
    if not info.is_main:
        return
    tensors = {**_state(backbone, head, trainable),
               **{f"rng.{kind}.{r}": st for kind, per_rank in states.items()
                  for r, st in enumerate(per_rank)}}
    save_training_state(path, tensors, opt, {"iteration": iteration,
                                             "loss_guard": guard.state_dict()})
