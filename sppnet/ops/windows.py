"""Pyramid pooling of many windows of one conv pass (SPP-net detection, paper appendix): the API
and its argument checks.

Shapes: N images, C channels, (H, W) map size, R windows, D = C * sum(n*n) pooled length.

A window in image pixels is projected onto inclusive map cells by :func:`project_boxes`, and its
pooled vector equals, to the bit for max pooling, :func:`sppnet.ops.spp_pool` of the crop
``features[b, :, y0:y1+1, x0:x1+1]``. Two backends are kept and tested for equality:

- ``"numba"`` (:mod:`._windows_numba`): compiled CPU kernels registered as custom ops. Used on
  CPU.
- ``"torch"`` (:mod:`._windows_torch`): pure tensor ops that run on any device and under
  autograd. Used on GPU, or when numba cannot be imported.

Under ONNX export the pooling is written in standard ONNX operators (:mod:`._onnx_windows`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._checks import (
    check_boxes,
    check_feature_map,
    check_image_size,
    check_levels,
    check_mode,
    check_stride,
    values_checkable,
)
from ._levels import spp_output_dim
from ._windows_torch import pool_cells_torch

try:  # the compiled kernels are optional; the torch backend is always there
    from ._windows_numba import numba_forward as _numba_forward
except ImportError:  # pragma: no cover - exercised only without numba
    _numba_forward = None

__all__ = ["project_boxes", "spp_pool_cells", "spp_roi_pool", "spp_pool_valid", "boxes_to_rois",
           "numba_available", "BACKENDS"]

BACKENDS = ("auto", "numba", "torch")


def numba_available() -> bool:
    """Whether the compiled CPU window-pooling kernels can be used."""
    return _numba_forward is not None


def project_boxes(
    boxes: Tensor, stride: float, map_size: Sequence[int], offset: float = 0.0
) -> Tensor:
    """Project image-pixel windows onto inclusive feature-map cells (paper appendix).

    Map cell ``j`` has its receptive-field centre at image coordinate ``stride * j + offset``.
    Left/top edge ``floor((x - offset) / stride) + 1``, right/bottom ``ceil((x - offset) / stride)
    - 1``; a window too small for that (left > right) collapses to ``floor((left + right) / 2)``
    on that axis; all is clamped into the map, so every window covers at least one cell.

    Args:
        boxes (Tensor[R, 4]): ``(x1, y1, x2, y2)`` in image pixels, continuous coordinates.
        stride: product of the strides up to the map (16 for ZF-5 conv5).
        map_size: ``(H, W)`` of the feature map.
        offset: image coordinate of cell 0's receptive-field centre.

    Returns:
        LongTensor[R, 4]: inclusive cells ``(x0, y0, x1, y1)`` with ``0 <= x0 <= x1 < W``.
    """
    check_boxes(boxes)
    stride, offset = check_stride(stride, offset)
    h, w = check_image_size(map_size, "map_size")
    b = (boxes.to(torch.float64) - offset) / stride
    lo = torch.floor(b[:, :2]) + 1  # (R, 2) left, top
    hi = torch.ceil(b[:, 2:]) - 1  # (R, 2) right, bottom
    mid = torch.floor((lo + hi) / 2)
    small = lo > hi
    lo = torch.where(small, mid, lo)
    hi = torch.where(small, mid, hi)
    upper = torch.tensor([w - 1, h - 1], dtype=torch.float64, device=boxes.device)
    lo = torch.minimum(lo.clamp(min=0), upper)
    hi = torch.minimum(hi.clamp(min=0), upper)
    return torch.cat([lo, hi], 1).to(torch.long)


def _check_cells(cells: Tensor, batch_index: Tensor, features: Tensor) -> None:
    if not isinstance(cells, Tensor) or cells.dim() != 2 or cells.shape[1] != 4:
        shape = tuple(cells.shape) if isinstance(cells, Tensor) else type(cells).__name__
        raise ValueError(f"cells must be a LongTensor of shape (R, 4), got {shape}")
    if cells.dtype != torch.long:
        raise TypeError(f"cells must have dtype torch.long, got {cells.dtype}")
    if not isinstance(batch_index, Tensor) or batch_index.shape != (cells.shape[0],):
        shape = tuple(batch_index.shape) if isinstance(batch_index, Tensor) else batch_index
        raise ValueError(f"batch_index must have shape ({cells.shape[0]},), got {shape}")
    if cells.numel() == 0 or not values_checkable():
        return
    n, _, h, w = features.shape
    limits = torch.tensor([w, h, w, h], device=cells.device)
    bad = ((cells < 0) | (cells >= limits)).any(1) | (cells[:, 2] < cells[:, 0]) | (
        cells[:, 3] < cells[:, 1])
    if bool(bad.any()):
        r = int(bad.nonzero()[0, 0])
        raise ValueError(f"cells row {r} = {cells[r].tolist()} is not an inclusive "
                         f"(x0, y0, x1, y1) "
                         f"inside the map of size (H, W) = ({h}, {w})")
    bad_b = (batch_index < 0) | (batch_index >= n)
    if bool(bad_b.any()):
        r = int(bad_b.nonzero()[0, 0])
        raise ValueError(f"batch index {int(batch_index[r])} in row {r} is out of range for "
                         f"features with N={n}")


def spp_pool_cells(
    features: Tensor,
    cells: Tensor,
    batch_index: Tensor,
    levels: Sequence[int] = (6, 3, 2, 1),
    mode: str = "max",
    backend: str = "auto",
    out: Tensor | None = None,
) -> Tensor:
    """Pyramid-pool windows already given as inclusive map cells.

    Args:
        features (Tensor[N, C, H, W]): conv maps (channels_last avoids a copy on CPU).
        cells (LongTensor[R, 4]): inclusive ``(x0, y0, x1, y1)`` cells, e.g. from
            :func:`project_boxes`.
        batch_index (LongTensor[R]): image of each window.
        levels, mode: as :func:`sppnet.ops.spp_pool`.
        backend: ``"auto"`` (numba on CPU when available, else torch), ``"numba"`` or ``"torch"``.
        out (Tensor[R, D], optional): write the result here instead of a new tensor (a reused
            buffer saves the page faults of a fresh ~100 MB allocation). Like torch's ``out=``
            arguments, not differentiable. Without it, large CPU outputs come from a pool of
            the memory of earlier outputs that are no longer referenced (``sppnet.ops``
            ``_buffers``; ``SPPNET_BUFFER_CACHE_MB``, default 512, 0 = off).

    Returns:
        Tensor[R, C * sum(n*n)], equal to ``spp_pool`` of each crop. Gradients flow to features.
    """
    check_feature_map(features, "features")
    levels = check_levels(levels)
    check_mode(mode)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got backend={backend!r}")
    _check_cells(cells, batch_index, features)
    if out is not None:
        _check_out(out, features, cells.shape[0], spp_output_dim(features.shape[1], levels))
    if torch.onnx.is_in_onnx_export():  # standard ONNX ops (MaxRoiPool), see _onnx_windows
        from ._onnx_windows import onnx_pool_cells

        result = onnx_pool_cells(features, cells, batch_index, levels, mode)
        return result if out is None else out.copy_(result)
    use_numba = backend == "numba" or (
        backend == "auto" and numba_available() and features.device.type == "cpu")
    if use_numba:
        if not numba_available():
            raise RuntimeError("backend='numba' needs the numba package: pip install numba")
        if features.device.type != "cpu":
            raise ValueError(f"backend='numba' runs on CPU tensors, got device {features.device}")
        if out is not None:
            _numba_forward(features, batch_index, cells, levels, mode, out)
            return out
        return torch.ops.sppnet.window_pool(features, batch_index, cells, list(levels), mode)
    result = pool_cells_torch(features, batch_index, cells, levels, mode)
    return result if out is None else out.copy_(result)


def _check_out(out: Tensor, features: Tensor, n_windows: int, dim: int) -> None:
    if not isinstance(out, Tensor) or out.shape != (n_windows, dim):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"out must have shape ({n_windows}, {dim}), got {shape}")
    if out.dtype != features.dtype or out.device != features.device or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {features.dtype} tensor on {features.device}, "
                         f"got {out.dtype} on {out.device} (contiguous={out.is_contiguous()})")
    if torch.is_grad_enabled() and features.requires_grad:
        raise RuntimeError("out= is not differentiable: call under torch.no_grad() or leave "
                           "out=None")


def spp_roi_pool(
    features: Tensor,
    rois: Tensor | Sequence[Tensor],
    levels: Sequence[int] = (6, 3, 2, 1),
    stride: float = 16,
    offset: float = 0.0,
    mode: str = "max",
    backend: str = "auto",
    out: Tensor | None = None,
) -> Tensor:
    """Pyramid-pool image windows from conv maps computed once per image (SPP-net detection).

    Args:
        features (Tensor[N, C, H, W]): conv maps of N images.
        rois (Tensor[R, 5] or list[Tensor[L_i, 4]]): rows ``(batch_index, x1, y1, x2, y2)``
            in image pixels, or, as torchvision's ``roi_pool`` also takes them, one
            ``(x1, y1, x2, y2)`` tensor per image (``len(rois) == N``).
        levels: pyramid levels (paper: ``(6, 3, 2, 1)``).
        stride, offset: the map's receptive-field geometry (see :func:`project_boxes`).
        mode: ``"max"`` or ``"avg"``.
        backend, out: see :func:`spp_pool_cells`.

    Returns:
        Tensor[R, C * sum(n*n)]: row ``r`` equals ``spp_pool`` of the projected crop of image
        ``rois[r, 0]`` (exactly, for max). ``R = 0`` gives ``(0, D)``.
    """
    check_feature_map(features, "features")
    if isinstance(rois, (list, tuple)):
        rois = boxes_to_rois(rois, features.shape[0])
    check_boxes(rois, "rois", columns=5)
    stride, offset = check_stride(stride, offset)
    bidx = rois[:, 0]
    if rois.numel() and values_checkable() and bool((bidx != torch.floor(bidx)).any()):
        r = int((bidx != torch.floor(bidx)).nonzero()[0, 0])
        raise ValueError(f"rois[:, 0] must hold integer batch indices, got {float(bidx[r])} "
                         f"in row {r}")
    n = features.shape[0]
    if rois.numel() and values_checkable() and bool(((bidx < 0) | (bidx >= n)).any()):
        r = int(((bidx < 0) | (bidx >= n)).nonzero()[0, 0])
        raise ValueError(f"rois[:, 0] batch index {int(bidx[r])} in row {r} is out of range for "
                         f"features with N={n}")
    cells = project_boxes(rois[:, 1:], stride, features.shape[-2:], offset)
    return spp_pool_cells(features, cells, bidx.to(torch.long), levels, mode, backend, out)


def boxes_to_rois(boxes: Sequence[Tensor], n_images: int | None = None) -> Tensor:
    """``[Tensor[L_i, 4]]`` (one per image) -> ``Tensor[sum L_i, 5]`` rows ``(i, x1, y1, x2,
    y2)`` (torchvision's ``convert_boxes_to_roi_format``)."""
    if n_images is not None and len(boxes) != n_images:
        raise ValueError(f"rois as a list needs one (L, 4) tensor per image: got {len(boxes)} for "
                         f"{n_images} feature maps")
    rows = []
    for i, b in enumerate(boxes):
        b = check_boxes(b, f"rois[{i}]")
        rows.append(torch.cat([b.new_full((len(b), 1), float(i)), b], 1))
    if not rows:
        return torch.zeros(0, 5)
    return torch.cat(rows)


def spp_pool_valid(x: Tensor, image_sizes: Tensor | Sequence[Sequence[int]],
                   levels: Sequence[int] = (6, 3, 2, 1), mode: str = "max",
                   backend: str = "auto") -> Tensor:
    """Pyramid-pool the valid ``(h_i, w_i)`` top-left region of each map of a zero-padded batch
    (images of different sizes in one batch): row ``i`` equals ``spp_pool`` of
    ``x[i, :, :h_i, :w_i]``, with gradients."""
    check_feature_map(x)
    sizes = torch.as_tensor(image_sizes, dtype=torch.long).reshape(-1, 2) if not (
        isinstance(image_sizes, Tensor) and image_sizes.dim() == 2) else image_sizes.long()
    n, _, h, w = x.shape
    if sizes.shape != (n, 2):
        raise ValueError(f"image_sizes must be one (h, w) per map: shape ({n}, 2), got "
                         f"{tuple(sizes.shape)}")
    if values_checkable() and n and bool(((sizes < 1) | (sizes[:, 0] > h)[:, None]
                                          | (sizes[:, 1] > w)[:, None]).any()):
        r = int(((sizes < 1).any(1) | (sizes[:, 0] > h) | (sizes[:, 1] > w)).nonzero()[0, 0])
        raise ValueError(f"image_sizes[{r}] = {tuple(sizes[r].tolist())} is not a region of the "
                         f"{h}x{w} maps")
    cells = torch.stack([torch.zeros_like(sizes[:, 0]), torch.zeros_like(sizes[:, 0]),
                         sizes[:, 1] - 1, sizes[:, 0] - 1], 1).to(x.device)
    return spp_pool_cells(x, cells, torch.arange(n, device=x.device), levels, mode, backend)
