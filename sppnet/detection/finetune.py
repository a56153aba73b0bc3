"""Stage 3: fine-tune fc6, fc7 and a new (K+1)-way fc8 on pooled windows (SPP section 4.1).

Shapes: B windows per mini-batch, D pooled dims, F fc width, K classes (+1 background).

Mini-batches: ``ft_images`` images (each flipped with probability 1/2 when ``flip``), ``ft_batch``
windows in all, 25% foreground (IoU >= 0.5 with a ground truth, label = its class) and the rest
background (IoU in [0.1, 0.5), label 0). The conv trunk is fixed: windows are pooled from the
cached conv maps, so only the fc layers train (SPP-net's fine-tuning does exactly this).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils.checkpoint import (
    resume_training_state,
    save_training_state,
    strip_prefix,
    with_prefix,
)
from ..utils.loss_guard import LossGuard
from .config import DetConfig
from .head import DetectionHead
from .targets import WindowSet

__all__ = ["DetectionHead", "sample_windows", "finetune"]  # DetectionHead: from .head

log = logging.getLogger(__name__)
LOG_EVERY = 50  # iterations per logged point
CKPT_EVERY = 500  # iterations per resumable checkpoint


def sample_windows(ws: WindowSet, n: int, fg_fraction: float, fg_iou: float, bg_lo: float,
                   bg_hi: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, labels)`` of one image's share of a mini-batch (labels: 0 = background,
    ``k + 1`` = class k). Background falls back to IoU < ``bg_hi`` when [lo, hi) is empty."""
    fg = np.nonzero(ws.max_iou >= fg_iou)[0]
    bg = np.nonzero((ws.max_iou >= bg_lo) & (ws.max_iou < bg_hi))[0]
    if len(bg) == 0:
        bg = np.nonzero(ws.max_iou < bg_hi)[0]
    n_fg = min(len(fg), int(round(n * fg_fraction)))
    n_bg = min(len(bg), n - n_fg)
    fg = rng.choice(fg, n_fg, replace=False) if n_fg else fg[:0]
    bg = rng.choice(bg, n_bg, replace=False) if n_bg else bg[:0]
    idx = np.concatenate([fg, bg])
    labels = np.concatenate([ws.gt_label[fg] + 1, np.zeros(len(bg), np.int64)])
    return idx, labels


def _lr(cfg: DetConfig, it: int) -> float:
    return cfg.ft_lr * (0.1 if it >= cfg.ft_lr_step else 1.0)


def _resume(head: DetectionHead, opt: torch.optim.Optimizer, ckpt: Path,
            metrics_path: Path, guard: LossGuard) -> int:
    """The iteration to start from: that of ``finetune_last.safetensors`` (weights, optimizer,
    RNG and loss guard restored; the metrics logged after it dropped, so the resumed run logs
    each iteration once), else 0 with the old metrics removed."""

    def restore(tensors: dict[str, Tensor]) -> None:
        head.load_state_dict(strip_prefix("head.", tensors))
        # dropout draws from these generators: the resumed run draws what the unbroken one
        # would have
        if "rng.torch" in tensors:
            torch.set_rng_state(tensors["rng.torch"])
            if "rng.cuda" in tensors and torch.cuda.is_available():
                torch.cuda.set_rng_state(tensors["rng.cuda"])
        else:
            log.warning("%s holds no RNG state (an older checkpoint): the resumed run draws "
                        "other dropout masks than an unbroken run", ckpt)

    start = resume_training_state(ckpt, opt, guard, restore, "fine-tuning")
    keep_metrics_up_to(metrics_path, start)
    return start


def keep_metrics_up_to(path: Path, iteration: int) -> None:
    """Drop the lines of a ``metrics.jsonl`` logged after ``iteration`` (the checkpoint a run
    resumes from: the resumed run logs them again, so each iteration is logged once); the
    file goes when nothing is left."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines()
            if ln.strip() and json.loads(ln).get("iteration", 0) <= iteration]
    if keep:
        path.write_text("".join(ln + "\n" for ln in keep))
    else:
        path.unlink()


def _minibatch(windows: Sequence[WindowSet], pool: Callable,
               cfg: DetConfig, usable: list[int], rng: np.random.Generator,
               it: int) -> tuple[Tensor, Tensor]:
    """``ft_images`` images (each flipped with probability 1/2 when ``flip``), their share
    of ``ft_batch`` windows: pooled features ``(B, D)`` (checked finite) and labels ``(B,)``."""
    per_image = math.ceil(cfg.ft_batch / cfg.ft_images)
    feats, labels = [], []
    for i in rng.choice(usable, min(cfg.ft_images, len(usable)), replace=False):
        flip = bool(cfg.flip and rng.random() < 0.5)
        idx, lab = sample_windows(windows[i], per_image, cfg.fg_fraction, cfg.fg_iou,
                                  cfg.bg_iou_lo, cfg.bg_iou_hi, rng)
        if len(idx):
            feats.append(pool(int(i), flip, idx))
            labels.append(torch.from_numpy(lab))
    x = torch.cat(feats)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"fine-tuning, iteration {it + 1}: the pooled features hold "
                         "NaN/inf — a corrupt conv-map cache or a diverged backbone; "
                         "delete the cache folder and rerun")
    return x, torch.cat(labels)


def finetune(head: DetectionHead, windows: Sequence[WindowSet],
             pool: Callable[[int, bool, np.ndarray], Tensor], cfg: DetConfig, out_dir: Path,
             progress: bool = True) -> DetectionHead:
    """Train ``head`` for ``cfg.ft_iters`` SGD iterations; resumable.

    Args:
        windows: labelled windows per training image (a flipped image's windows are the
            same rows, flipped, with the same labels).
        pool: ``pool(image_index, flipped, rows (B,)) -> (B, D)`` pooled features of rows of
            the image's windows (of the flipped image's windows when ``flipped``).
        out_dir: holds ``finetune_last.safetensors`` (every :data:`CKPT_EVERY` iterations),
            ``finetune_metrics.jsonl`` and the final ``head.safetensors``.
    """
    from tqdm import tqdm

    device = head.fc6.weight.device  # the head trains where it is; features come from the CPU
    opt = torch.optim.SGD(head.parameters(), lr=cfg.ft_lr, momentum=cfg.ft_momentum,
                          weight_decay=cfg.ft_weight_decay)
    ckpt = out_dir / "finetune_last.safetensors"
    metrics_path = out_dir / "finetune_metrics.jsonl"
    guard = LossGuard("fine-tuning", head.num_classes + 1, f"ft_lr={cfg.ft_lr:g}; lower it "
                      "with --set ft_lr=...")
    start = _resume(head, opt, ckpt, metrics_path, guard)
    usable = [i for i, w in enumerate(windows) if len(w.boxes)]
    head.train()
    bar = tqdm(range(start, cfg.ft_iters), desc="fine-tune fc", disable=not progress,
               initial=start, total=cfg.ft_iters)
    run_loss = run_acc = run_n = 0.0
    for it in bar:
        rng = np.random.default_rng((cfg.seed, it))  # deterministic per iteration: resumable
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, it)
        x, y = _minibatch(windows, pool, cfg, usable, rng, it)  # (B, D), (B,)
        x, y = x.to(device), y.to(device)
        logits = head(x)
        loss = F.cross_entropy(logits, y)
        guard.step(loss.item(), f"iteration {it + 1}")  # NaN/inf: stop before the step
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run_loss += loss.item() * len(y)
        run_acc += float((logits.argmax(1) == y).sum())
        run_n += len(y)
        if (it + 1) % LOG_EVERY == 0 or it + 1 == cfg.ft_iters:
            rec = {"iteration": it + 1, "loss": run_loss / run_n, "accuracy": run_acc / run_n,
                   "lr": _lr(cfg, it)}
            guard.window(rec["loss"], f"iterations up to {it + 1}")  # far above its start
            with open(metrics_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['accuracy']:.3f}")
            run_loss = run_acc = run_n = 0.0
        if (it + 1) % CKPT_EVERY == 0 and it + 1 < cfg.ft_iters:
            _checkpoint(ckpt, head, opt, it + 1, guard)
    bar.close()
    head.eval()
    plot_finetune_curves(metrics_path, out_dir / "finetune_curves.png")
    return head


def _checkpoint(path: Path, head: DetectionHead, opt: torch.optim.Optimizer, iteration: int,
                guard: LossGuard) -> None:
    """What an exact resume of fine-tuning needs after ``iteration``: the head, the optimizer,
    torch's RNG (and CUDA's where the head is) and the loss guard's state."""
    device = head.fc6.weight.device
    rng = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["rng.cuda"] = torch.cuda.get_rng_state(device)
    save_training_state(path, {**with_prefix("head.", head.state_dict()), **rng}, opt,
                        {"iteration": iteration, "loss_guard": guard.state_dict()})


def plot_finetune_curves(metrics_path: Path, png: Path) -> None:
    """Loss and window accuracy over iterations, from ``finetune_metrics.jsonl``."""
    if not metrics_path.is_file():
        return
    from ..utils.plotting import pyplot

    plt = pyplot()

    recs = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
    if not recs:
        return
    it = [r["iteration"] for r in recs]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    a.plot(it, [r["loss"] for r in recs])
    a.set_xlabel("iteration")
    a.set_ylabel("cross-entropy (K+1 classes)")
    b.plot(it, [r["accuracy"] for r in recs])
    b.set_xlabel("iteration")
    b.set_ylabel("window accuracy (train batches)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.suptitle("fc fine-tuning on pooled windows")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
