"""A classifier run's checkpoints — everything an exact resume needs (weights, optimizer,
schedule, RNG, epoch, step, running totals) in one safetensors file, refused when the weights
are not finite — the check that a checkpoint fits the run resuming from it, and the curves the
run draws after each epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..utils.checkpoint import CheckpointError, optimizer_to_flat, save_checkpoint, with_prefix
from ..utils.loss_guard import TrainingDiverged
from .schedule import PlateauSchedule

__all__ = ["save_run_checkpoint", "check_resume", "plot_curves"]


def save_run_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
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


def check_resume(meta: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
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
