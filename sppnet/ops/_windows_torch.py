"""Window pooling in pure tensor ops (the ``"torch"`` backend of :mod:`sppnet.ops.windows`):
a 2-D sparse max table for ``max``, an integral image for ``avg``; runs on any device and under
autograd.

Shapes: N images, C channels, (H, W) map size, R windows, B bins of all levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import values_checkable

__all__ = ["pool_cells_torch", "TORCH_GATHER_BYTES"]


def _all_bins(cells: Tensor, levels: Sequence[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bin edges of every window and level: four ``(R, B)`` tensors ``ys, ye, xs, xe``
    (end exclusive), bins ordered level by level, row-major within a level."""
    x0, y0, x1, y1 = cells.unbind(1)
    w = (x1 - x0 + 1)[:, None]
    h = (y1 - y0 + 1)[:, None]
    out: list[list[Tensor]] = [[], [], [], []]
    for n in levels:
        i = torch.arange(n, device=cells.device)[None, :]
        ys, ye = y0[:, None] + (i * h) // n, y0[:, None] + ((i + 1) * h + n - 1) // n  # (R, n)
        xs, xe = x0[:, None] + (i * w) // n, x0[:, None] + ((i + 1) * w + n - 1) // n
        r = cells.shape[0]
        for k, (t, rows) in enumerate(((ys, True), (ye, True), (xs, False), (xe, False))):
            full = t[:, :, None].expand(r, n, n) if rows else t[:, None, :].expand(r, n, n)
            out[k].append(full.reshape(r, n * n))
    ys, ye, xs, xe = (torch.cat(v, 1) for v in out)
    return ys, ye, xs, xe


def _floor_log2(values: Tensor, upto: int) -> Tensor:
    table = [0] * (upto + 1)
    for v in range(2, upto + 1):
        table[v] = table[v // 2] + 1
    return torch.tensor(table, device=values.device)[values]


# the torch path gathers (windows, bins, 4, C) corner values; it does so this many bytes at a
# time (a whole 2000-window batch on a 576-channel map would gather ~0.9 GB at once). Measured
# (benchmarks/window_pool_memory.py): 2000 windows on a 576 x 43 x 57 map, peak memory beyond the
# output 1336 MB (max) / 2451 MB (avg) before chunking
TORCH_GATHER_BYTES = 16 << 20


def _max_table(f: Tensor, kh_n: int, kw_n: int) -> Tensor:
    """2-D sparse max table of ``f (N, H, W, C)``: ``T[j, k, n, y, x] = max f[n, y:y+2^j,
    x:x+2^k]`` (clamped at the map's edge) for ``j < kh_n, k < kw_n``. Without autograd it is
    filled in place (no stacked copies); with it, built out of place."""
    n_img, h, w, n_ch = f.shape
    if torch.is_grad_enabled() and f.requires_grad:
        cols = [f]
        for k in range(1, kw_n):
            s, prev = 1 << (k - 1), cols[-1]
            cols.append(torch.cat([torch.maximum(prev[:, :, : w - s], prev[:, :, s:]),
                                   prev[:, :, w - s:]], 2))
        table = [torch.stack(cols)]
        for j in range(1, kh_n):
            s, prev = 1 << (j - 1), table[-1]
            table.append(torch.cat([torch.maximum(prev[:, :, : h - s], prev[:, :, s:]),
                                    prev[:, :, h - s:]], 2))
        return torch.stack(table)
    t = f.new_empty((kh_n, kw_n, n_img, h, w, n_ch))
    t[0, 0] = f
    for k in range(1, kw_n):
        s, prev = 1 << (k - 1), t[0, k - 1]
        t[0, k, :, :, : w - s] = torch.maximum(prev[:, :, : w - s], prev[:, :, s:])
        t[0, k, :, :, w - s:] = prev[:, :, w - s:]
    for j in range(1, kh_n):
        s = 1 << (j - 1)
        for k in range(kw_n):  # one (N, H, W, C) temporary at a time
            prev = t[j - 1, k]
            t[j, k, :, : h - s] = torch.maximum(prev[:, : h - s], prev[:, s:])
            t[j, k, :, h - s:] = prev[:, h - s:]
    return t


def pool_cells_torch(features: Tensor, bidx: Tensor, cells: Tensor, levels: Sequence[int],
                      mode: str) -> Tensor:
    n_img, n_ch, h, w = features.shape
    r = cells.shape[0]
    if r == 0:  # a well-shaped empty result, still part of the graph
        return features.new_zeros((0, n_ch * sum(n * n for n in levels))) + features.sum() * 0
    f = features.permute(0, 2, 3, 1)  # (N, H, W, C)
    ys, ye, xs, xe = _all_bins(cells, levels)  # (R, B)
    n_bins = ys.shape[1]
    b = bidx[:, None]
    if mode == "max":
        kh = _floor_log2(ye - ys, h)
        kw = _floor_log2(xe - xs, w)
        # powers up to the largest bin (not the map): a smaller table. While compiling, the
        # map's (static shapes)
        kh_n, kw_n = int(math.log2(h)) + 1, int(math.log2(w)) + 1
        if values_checkable() and kh.numel():
            kh_n, kw_n = int(kh.max()) + 1, int(kw.max()) + 1
        table = _max_table(f, kh_n, kw_n)
        flat = table.reshape(-1, n_ch)  # (KH*KW*N*H*W, C)
        y_hi, x_hi = ye - (1 << kh), xe - (1 << kw)
        base = ((kh * kw_n + kw) * n_img + b) * (h * w)
        corners = torch.stack([base + ys * w + xs, base + ys * w + x_hi,
                               base + y_hi * w + xs, base + y_hi * w + x_hi], -1)  # (R, B, 4)
        elem = flat.element_size()
    else:
        acc = torch.float64 if features.device.type != "mps" else torch.float32
        flat = F.pad(f.to(acc).cumsum(1).cumsum(2), (0, 0, 1, 0, 1, 0)).reshape(-1, n_ch)
        base = b * ((h + 1) * (w + 1))
        corners = torch.stack([base + ye * (w + 1) + xe, base + ys * (w + 1) + xe,
                               base + ye * (w + 1) + xs, base + ys * (w + 1) + xs], -1)
        area = ((ye - ys) * (xe - xs)).to(acc)[..., None]
        elem = torch.finfo(acc).bits // 8
    result = features.new_empty((r, n_ch * n_bins))
    step = max(1, TORCH_GATHER_BYTES // max(1, n_bins * 4 * n_ch * elem))
    for lo in range(0, r, step):
        hi = min(r, lo + step)
        g = flat[corners[lo:hi].reshape(-1)].reshape(hi - lo, n_bins, 4, n_ch)
        if mode == "max":
            pooled = g.amax(2)  # (r_c, B, C)
        else:
            pooled = ((g[:, :, 0] - g[:, :, 1] - g[:, :, 2] + g[:, :, 3])
                      / area[lo:hi]).to(features.dtype)
        start = 0
        for n in levels:  # level by level, each flattened (C, n, n)
            result[lo:hi, n_ch * start:n_ch * (start + n * n)] = (
                pooled[:, start:start + n * n].transpose(1, 2).reshape(hi - lo, n_ch * n * n))
            start += n * n
    return result
