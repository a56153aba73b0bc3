"""Argument checks shared by the public ops (STYLE 13: errors name the argument and the value)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

POOL_MODES = ("max", "avg")


def check_levels(levels: Sequence[int] | int) -> tuple[int, ...]:
    """Return ``levels`` as a tuple of positive ints, or raise naming the bad value."""
    if isinstance(levels, int) and not isinstance(levels, bool):
        levels = (levels,)
    if not isinstance(levels, (Sequence, Tensor)) or isinstance(levels, str):
        raise TypeError(f"levels must be a sequence of positive ints, got {levels!r}")
    out = []
    for n in levels:
        if isinstance(n, Tensor) and n.numel() == 1:
            n = n.item()
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"levels must contain ints, got {n!r} in levels={tuple(levels)!r}")
        if n <= 0:
            raise ValueError(f"levels must be positive, got {n} in levels={tuple(levels)!r}")
        out.append(int(n))
    if not out:
        raise ValueError("levels must not be empty, got levels=()")
    return tuple(out)


def check_mode(mode: str) -> str:
    if mode not in POOL_MODES:
        raise ValueError(f"mode must be one of {POOL_MODES}, got mode={mode!r}")
    return mode


def check_feature_map(x: object, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), "
                        f"got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[-1] < 1 or x.shape[-2] < 1:
        raise ValueError(f"{name} must have H, W >= 1, got shape {tuple(x.shape)}")
    return x


def check_stride(stride: float, offset: float) -> tuple[float, float]:
    if isinstance(stride, bool) or not isinstance(stride, (int, float)):
        raise TypeError(f"stride must be a positive number, got {stride!r}")
    if not math.isfinite(stride) or stride <= 0:
        raise ValueError(f"stride must be a positive finite number, got stride={stride}")
    if isinstance(offset, bool) or not isinstance(offset, (int, float)):
        raise TypeError(f"offset must be a number, got {offset!r}")
    if not math.isfinite(offset):
        raise ValueError(f"offset must be finite, got offset={offset}")
    return float(stride), float(offset)


def values_checkable() -> bool:
    """Whether checks that read tensor values run: eagerly yes; while ``torch.compile``
    traces, no (a data-dependent branch would break the graph) — shapes are still checked."""
    return not torch.compiler.is_compiling()


def check_boxes(boxes: object, name: str = "boxes", columns: int = 4) -> Tensor:
    """Check a float ``(R, columns)`` box tensor whose last 4 columns are finite ``xyxy``."""
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (R, {columns}), "
                        f"got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != columns:
        raise ValueError(f"{name} must have shape (R, {columns}), got shape {tuple(boxes.shape)}")
    if boxes.numel() == 0 or not values_checkable():
        return boxes
    if boxes.is_floating_point() and not bool(torch.isfinite(boxes).all()):
        bad = int((~torch.isfinite(boxes)).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"{name} must be finite, got NaN/inf in row {bad}: {boxes[bad].tolist()}")
    xyxy = boxes[:, -4:]
    inverted = (xyxy[:, 2] < xyxy[:, 0]) | (xyxy[:, 3] < xyxy[:, 1])
    if bool(inverted.any()):
        bad = int(inverted.nonzero()[0, 0])
        raise ValueError(
            f"{name} must satisfy x2 >= x1 and y2 >= y1 (xyxy), "
            f"got row {bad}: {boxes[bad].tolist()}"
        )
    return boxes


def check_image_size(image_size: Sequence[int], name: str = "image_size") -> tuple[int, int]:
    if isinstance(image_size, Sequence) and any(isinstance(v, torch.SymInt) for v in image_size):
        h, w = image_size  # symbolic sizes while exporting: int() would fix them to one value
        return h, w
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be (H, W), got {image_size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be (H, W) with H, W >= 1, got {tuple(image_size)!r}")
    return h, w
