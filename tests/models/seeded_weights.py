"""Seeded random weights that two implementations can regenerate identically from a state dict's
key names and shapes alone (used by the backbone fixtures: the generator script runs torchvision
/ timm, the tests run sppnet). Pure torch, no sppnet import.

One ``torch.Generator`` seeded with ``seed`` draws ``randn(shape)`` for every key in sorted
order, then, by the key's role (deterministically, the same on both sides):

- ``*.num_batches_tracked``: left as it is (zeros, not drawn);
- ``*.running_var``: ``abs() + 0.5`` (positive);
- tensors of 2+ dims (conv / linear weights): ``* sqrt(2 / fan_in)`` (He scale, activations stay
  O(1) through deep nets);
- 1-dim ``*.weight`` (batch-norm scales): ``1 + 0.2 * x``;
- other 1-dim tensors (biases, running means): ``0.1 * x``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["seeded_weights", "seeded_input", "weights_checksum", "INPUT_SIZE"]

INPUT_SIZE = (67, 83)  # odd sizes, (H, W)


def seeded_weights(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Tensor]:
    """``{key: tensor}`` for ``shapes`` (``{key: shape}``), float32 (``num_batches_tracked``:
    int64 zeros)."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for k in sorted(shapes):
        shape = tuple(shapes[k])
        if k.endswith("num_batches_tracked"):
            out[k] = torch.zeros(shape, dtype=torch.long)
            continue
        x = torch.randn(shape, generator=g, dtype=torch.float32)
        if k.endswith("running_var"):
            x = x.abs() + 0.5
        elif len(shape) >= 2:
            x = x * math.sqrt(2.0 / math.prod(shape[1:]))
        elif k.endswith("weight"):
            x = 1 + 0.2 * x
        else:
            x = 0.1 * x
        out[k] = x
    return out


def seeded_input(seed: int = 1, size: tuple[int, int] = INPUT_SIZE) -> Tensor:
    """A ``(1, 3, H, W)`` standard-normal input (already normalised)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((1, 3, *size), generator=g, dtype=torch.float32)


def weights_checksum(weights: dict[str, Tensor]) -> float:
    """Sum of every value in float64: tells a changed random generator from a changed model."""
    return float(sum(v.double().sum() for v in weights.values()))
