"""The classifier a training run builds: the registry's net with its options (kept in
checkpoints to rebuild it), its frozen trunk layers, the metadata a checkpoint carries, and the
optimizer's parameter groups (the trunk at its own learning rate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..models import get_model
from .config import TrainConfig

__all__ = ["build_model", "freeze_trunk", "model_kwargs", "model_meta", "param_groups"]


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model of ``cfg``, its first ``freeze_layers`` trunk convs frozen."""
    model = get_model(cfg.model, num_classes=num_classes, **model_kwargs(cfg))
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


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
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
            "model_kwargs": model_kwargs(cfg),
            "input": {"mean": cfg.mean, "input_scale": cfg.input_scale, "resize": cfg.resize,
                      "crop_size": cfg.crop_size}}


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The trunk at ``lr * trunk_lr_mult``, the head at ``lr``; frozen parameters left out."""
    if cfg.trunk_lr_mult == 1.0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr_mult": 1.0}]
    trunk = {id(p) for p in model.features.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) in trunk and p.requires_grad],
               "lr_mult": cfg.trunk_lr_mult},
              {"params": [p for p in model.parameters()
                          if id(p) not in trunk and p.requires_grad], "lr_mult": 1.0}]
    return [g for g in groups if g["params"]]
