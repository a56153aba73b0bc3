"""Batches of a classifier's training and evaluation: crops (the paper's: centre or a corner,
flip, lighting, resized for multi-size training) or whole images in zero-padded batches, each
sample's augmentation drawn from ``(seed, epoch, index)``; and the evaluation of a split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.folder import DecodedImages, Sample
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
from ..utils.distributed import DistInfo, all_reduce_sum
from .config import TrainConfig

__all__ = ["Split", "make_batch", "make_full_batch", "full_max_side", "batch_of", "forward",
           "evaluate"]


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


def batch_of(split: Split, indices: np.ndarray, cfg: TrainConfig, epoch: int, size: int,
           train: bool) -> tuple[Tensor, Tensor | None, Tensor, int]:
    """``(images, image_sizes or None, labels, skipped)``: crops, or whole images."""
    if cfg.full_image:
        return make_full_batch(split, indices, cfg, epoch, size, train)
    x, y, skipped = make_batch(split, indices, cfg, epoch, size, train)
    return x, None, y, skipped


def forward(model: nn.Module, x: Tensor, sizes: Tensor | None, device: torch.device) -> Tensor:
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
        x, sizes, y, sk = batch_of(split, idx[s:s + batch_size], cfg, 0, size, train=False)
        skipped += sk
        if len(y) == 0:
            continue
        out = forward(model, x, sizes, device)
        loss_sum += float(F.cross_entropy(out, y.to(device), reduction="sum"))
        t1, t5 = topk_correct(out.cpu(), y, (1, 5))
        c1, c5, n = c1 + t1, c5 + t5, n + len(y)
    loss_sum, c1, c5, n, skipped = all_reduce_sum([loss_sum, c1, c5, n, skipped], info)
    n = max(n, 1)
    return {"loss": loss_sum / n, "top1": c1 / n, "top5": c5 / n, "n": int(n),
            "skipped": int(skipped)}
