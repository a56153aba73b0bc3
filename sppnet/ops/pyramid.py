"""Spatial pyramid pooling of whole feature maps (He et al., SPP-net, 2014).

Bin ``i`` of ``n`` over a length ``a`` spans ``[floor(i*a/n), ceil((i+1)*a/n))`` (the paper's
appendix rule, identical to ``adaptive_max_pool2d``). The output of a pyramid is level by level, in
the order given, each level flattened as ``(C, n, n)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_feature_map, check_levels, check_mode
from ._levels import bin_edges, derivation_plan, spp_output_dim

__all__ = ["bin_edges", "spp_output_dim", "spp_pool", "derivation_plan"]


def _exporting() -> bool:
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    if torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_exporting") and compiler.is_exporting():
        return True
    return False


def _bin_mask(length: int, n: int, device: torch.device) -> Tensor:
    """Boolean ``(n, length)`` membership of each cell in each bin, built from tensor ops so that
    it stays symbolic in ``length`` under ``torch.export`` / ONNX export."""
    i = torch.arange(n, device=device)
    t = torch.arange(length, device=device)
    start = (i * length) // n
    end = ((i + 1) * length + n - 1) // n
    return (t[None, :] >= start[:, None]) & (t[None, :] < end[:, None])


def _pool_level_masked(x: Tensor, n: int, mode: str) -> Tensor:
    """One level by separable masked reductions: (N, C, H, W) -> (N, C, n, n). Export-friendly."""
    h, w = x.shape[-2], x.shape[-1]
    mw = _bin_mask(w, n, x.device)  # (n, W)
    mh = _bin_mask(h, n, x.device)  # (n, H)
    if mode == "max":
        neg = torch.tensor(float("-inf"), dtype=x.dtype, device=x.device)
        cols = torch.where(mw, x.unsqueeze(-2), neg).amax(-1)  # (N, C, H, n)
        cols = cols.transpose(-1, -2).unsqueeze(-2)  # (N, C, n, 1, H)
        return torch.where(mh, cols, neg).amax(-1).transpose(-1, -2)
    pw = mw.to(x.dtype) / mw.sum(-1, keepdim=True).to(x.dtype)  # (n, W) rows sum to 1
    ph = mh.to(x.dtype) / mh.sum(-1, keepdim=True).to(x.dtype)  # (n, H)
    return ph @ (x @ pw.transpose(0, 1))


def spp_pool(x: Tensor, levels: Sequence[int] = (6, 3, 2, 1), mode: str = "max",
             image_sizes: Tensor | Sequence[Sequence[int]] | None = None) -> Tensor:
    """Spatial pyramid pooling of a batch of feature maps into fixed-length vectors.

    Args:
        x (Tensor[N, C, H, W]): feature maps, any ``H, W >= 1``; float32/float64/bfloat16,
            contiguous or channels_last.
        levels: pyramid levels; level ``n`` pools into ``n x n`` bins. Paper: ``(6, 3, 2, 1)``.
        mode: ``"max"`` (the paper) or ``"avg"``.
        image_sizes (Tensor[N, 2] or list of ``(h, w)``, optional): for a zero-padded batch of
            maps of different sizes, the valid top-left region of each; row ``i`` is then
            ``spp_pool`` of ``x[i, :, :h_i, :w_i]`` (see :func:`sppnet.ops.spp_pool_valid`).

    Returns:
        Tensor[N, C * sum(n*n)]: level by level in the order given, each flattened ``(C, n, n)``.
        Differentiable with respect to ``x``.
    """
    if image_sizes is not None:
        from .windows import spp_pool_valid

        return spp_pool_valid(x, image_sizes, levels, mode)
    check_feature_map(x)
    levels = check_levels(levels)
    check_mode(mode)
    n_batch = x.shape[0]
    if n_batch == 0 or x.shape[1] == 0:  # STYLE 14: an empty batch is a well-shaped result
        return x.new_zeros(n_batch, x.shape[1] * sum(n * n for n in levels)) + x.sum() * 0
    if _exporting():
        return torch.cat([_pool_level_masked(x, n, mode).reshape(n_batch, -1) for n in levels], 1)
    # adaptive pooling is ~10x faster on CPU in channels_last; the copy is cheap next to it.
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    pooled: list[Tensor | None] = [None] * len(levels)
    plan = derivation_plan(levels) if mode == "max" else [-1] * len(levels)
    for idx in sorted(range(len(levels)), key=lambda i: -levels[i]):
        n, src = levels[idx], plan[idx]
        if src < 0:
            pooled[idx] = (F.adaptive_max_pool2d(x, n) if mode == "max"
                           else F.adaptive_avg_pool2d(x, n))
        else:  # exact: each coarse bin is the union of k x k fine bins
            k = levels[src] // n
            pooled[idx] = F.max_pool2d(pooled[src], kernel_size=k, stride=k)
    return torch.cat([p.reshape(n_batch, -1) for p in pooled], 1)
