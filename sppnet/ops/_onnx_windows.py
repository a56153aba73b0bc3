"""Window pyramid pooling in standard ONNX operators, used while ``torch.onnx.export`` traces.

Shapes: N images, C channels, (H, W) map size, R windows, B bins of a level (``n * n``).

:func:`sppnet.ops.spp_pool_cells` (and so :func:`sppnet.ops.spp_roi_pool`) comes here when
``torch.onnx.is_in_onnx_export()``; the eager kernels (numba, or the sparse max table) have no
ONNX form, this has no eager one.

``max``: every bin of a level is one RoI of ONNX's standard ``MaxRoiPool`` with
``pooled_shape = (1, 1)`` and ``spatial_scale = 1``: the bin's inclusive map cells
``(x_s, y_s, x_e - 1, y_e - 1)``, computed here with integer tensor ops by the paper's rule
``[floor(i a / n), ceil((i + 1) a / n))``. With one output cell per RoI, MaxRoiPool's own bin
arithmetic is ``floor(0 * a) = 0`` and ``ceil(1 * a) = a`` — exact whatever ``a`` — so its output
is the max over exactly the bin's cells, bit for bit. (Per level, ``pooled_shape = (n, n)`` on the
window would use MaxRoiPool's float32 bins ``floor(i * (a / n))``, which ONNX Runtime gets wrong
for some ``n``: e.g. ``n = 7, a = 57`` puts the last bin one cell past the window.) A level that
divides a finer one is taken from it as the max over groups of fine bins
(:func:`sppnet.ops.pyramid.derivation_plan`; exact for floor/ceil bins), so for ``(6, 3, 2, 1)``
only the 36 bins of level 6 read the map.

``avg``: an integral image (float64 ``CumSum``) and four ``Gather`` reads per bin, as the torch
path; it holds ``R * B`` rows of ``C`` float64 values per corner, so it is meant for moderate
window counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._levels import derivation_plan

__all__ = ["onnx_pool_cells"]

ONNX_OPSET = 1  # MaxRoiPool has had one version since ONNX opset 1


def onnx_pool_cells(features: Tensor, cells: Tensor, bidx: Tensor, levels: Sequence[int],
                    mode: str) -> Tensor:
    """:func:`sppnet.ops.spp_pool_cells` as standard ONNX operators (export only).

    Args:
        features (Tensor[N, C, H, W]): float32 maps (ONNX Runtime's MaxRoiPool is float32).
        cells (LongTensor[R, 4]): inclusive ``(x0, y0, x1, y1)`` map cells.
        bidx (LongTensor[R]): image of each window.
        levels, mode: as :func:`sppnet.ops.spp_pool`.

    Returns:
        Tensor[R, C * sum(n*n)]: level by level, each flattened ``(C, n, n)``.
    """
    if not torch.onnx.is_in_onnx_export():
        raise RuntimeError("onnx_pool_cells builds an ONNX graph and has no eager kernel; it "
                           "runs only inside torch.onnx.export")
    if mode == "max" and features.dtype != torch.float32:
        raise TypeError(f"ONNX export of max window pooling needs float32 features (ONNX "
                        f"Runtime's MaxRoiPool is float32 only), got {features.dtype}")
    r, n_ch = cells.shape[0], features.shape[1]
    pooled: list[Tensor | None] = [None] * len(levels)
    plan = derivation_plan(levels) if mode == "max" else [-1] * len(levels)
    for idx in sorted(range(len(levels)), key=lambda i: -levels[i]):  # finest first
        n, src = levels[idx], plan[idx]
        if src >= 0:  # bin i of n is the union of bins i*k .. i*k+k-1 of n*k
            k = levels[src] // n
            pooled[idx] = pooled[src].reshape(r, n_ch, n, k, n, k).amax((3, 5))
            continue
        xs, xe, ys, ye = _level_bins(cells, n)  # (R, n) each, ends exclusive
        ys, ye = ys[:, :, None].expand(r, n, n), ye[:, :, None].expand(r, n, n)  # (R, n, n)
        xs, xe = xs[:, None, :].expand(r, n, n), xe[:, None, :].expand(r, n, n)
        if mode == "max":
            pooled[idx] = _max_bins(features, bidx, xs, ys, xe, ye, n)
        else:
            pooled[idx] = _avg_bins(features, bidx, xs, ys, xe, ye, n)
    return torch.cat([p.reshape(r, n_ch * levels[i] * levels[i]) for i, p in enumerate(pooled)],
                     1)


def _level_bins(cells: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bins ``[floor(i a / n), ceil((i + 1) a / n))`` of each window's cells, in map cells:
    ``xs, xe, ys, ye`` of shape ``(R, n)``, ends exclusive (integer arithmetic, exact)."""
    x0, y0, x1, y1 = cells.unbind(1)
    i = torch.arange(n, dtype=cells.dtype, device=cells.device)[None, :]  # (1, n)
    w, h = (x1 - x0 + 1)[:, None], (y1 - y0 + 1)[:, None]  # (R, 1)
    xs = x0[:, None] + torch.div(i * w, n, rounding_mode="floor")
    xe = x0[:, None] + torch.div((i + 1) * w + (n - 1), n, rounding_mode="floor")
    ys = y0[:, None] + torch.div(i * h, n, rounding_mode="floor")
    ye = y0[:, None] + torch.div((i + 1) * h + (n - 1), n, rounding_mode="floor")
    return xs, xe, ys, ye


def _max_bins(features: Tensor, bidx: Tensor, xs: Tensor, ys: Tensor, xe: Tensor, ye: Tensor,
              n: int) -> Tensor:
    """One MaxRoiPool RoI per bin, ``pooled_shape = (1, 1)``: ``(R, C, n, n)``."""
    r, n_ch = xs.shape[0], features.shape[1]
    b = bidx[:, None, None].expand(r, n, n)
    rois = torch.stack([b, xs, ys, xe - 1, ye - 1], -1).reshape(r * n * n, 5)  # (R*B, 5)
    out = torch.onnx.ops.symbolic(
        "MaxRoiPool", (features, rois.to(torch.float32)),
        {"pooled_shape": [1, 1], "spatial_scale": 1.0},
        dtype=features.dtype, shape=(r * n * n, n_ch, 1, 1), version=ONNX_OPSET)
    return out.reshape(r, n, n, n_ch).permute(0, 3, 1, 2)  # (R, C, n, n)


def _avg_bins(features: Tensor, bidx: Tensor, xs: Tensor, ys: Tensor, xe: Tensor, ye: Tensor,
              n: int) -> Tensor:
    """Bin means from a float64 integral image: ``(R, C, n, n)``."""
    n_img, n_ch, h, w = features.shape
    r = xs.shape[0]
    f = features.permute(0, 2, 3, 1).to(torch.float64)  # (N, H, W, C)
    table = F.pad(f.cumsum(1).cumsum(2), (0, 0, 1, 0, 1, 0)).reshape(-1, n_ch)  # (N*(H+1)*(W+1), C)
    base = bidx[:, None, None] * ((h + 1) * (w + 1))  # (R, 1, 1)

    def at(y: Tensor, x: Tensor) -> Tensor:
        return table[(base + y * (w + 1) + x).reshape(-1)]  # (R*B, C)

    total = at(ye, xe) - at(ys, xe) - at(ye, xs) + at(ys, xs)
    area = ((ye - ys) * (xe - xs)).reshape(-1, 1).to(torch.float64)
    mean = (total / area).to(features.dtype)  # (R*B, C)
    return mean.reshape(r, n, n, n_ch).permute(0, 3, 1, 2)
