"""Pyramid pooling of many windows of one conv pass (SPP-net detection, paper appendix).

Shapes: N images, C channels, (H, W) map size, R windows, D = C * sum(n*n) pooled length.

A window in image pixels is projected onto inclusive map cells by :func:`project_boxes`, and its
pooled vector equals, to the bit for max pooling, :func:`sppnet.ops.spp_pool` of the crop
``features[b, :, y0:y1+1, x0:x1+1]``. Two implementations are kept and tested for equality:

- ``"numba"``: a compiled CPU kernel, one scan over each window (coarse levels derived from the
  finest one), parallel over windows; backward parallel over channel groups. Used on CPU.
- ``"torch"``: pure tensor ops (a 2-D sparse max table, an integral image for ``avg``) that run on
  any device and under autograd. Used on GPU, or when numba cannot be imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._buffers import pooled_empty
from ._checks import (
    check_boxes,
    check_feature_map,
    check_image_size,
    check_levels,
    check_mode,
    check_stride,
    values_checkable,
)
from .pyramid import derivation_plan, spp_output_dim

try:  # the compiled kernels are optional; the torch path is always there
    import numba as _numba

    from . import _window_kernels as _kernels
except ImportError:  # pragma: no cover - exercised only without numba
    _numba = None
    _kernels = None

__all__ = ["project_boxes", "spp_pool_cells", "spp_roi_pool", "spp_pool_valid", "boxes_to_rois",
           "numba_available", "BACKENDS"]

BACKENDS = ("auto", "numba", "torch")


def numba_available() -> bool:
    """Whether the compiled CPU window-pooling kernels can be used."""
    return _kernels is not None


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
    result = _pool_cells_torch(features, batch_index, cells, levels, mode)
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


# ---------------------------------------------------------------------------------------------
# pure torch path


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


def _pool_cells_torch(features: Tensor, bidx: Tensor, cells: Tensor, levels: Sequence[int],
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


# ---------------------------------------------------------------------------------------------
# numba path


def _kernel_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _nhwc_numpy(t: Tensor) -> np.ndarray:
    """``(N, C, H, W)`` tensor as an ``(N, H, W, C)`` C-contiguous array (no copy for
    channels_last float32/float64 input)."""
    nhwc = t.detach().permute(0, 2, 3, 1).to(_kernel_dtype(t.dtype))
    return nhwc.contiguous().numpy()


def _level_layout(levels: Sequence[int], channels: int) -> tuple[np.ndarray, ...]:
    ns = np.asarray(levels, dtype=np.int64)
    sizes = ns * ns
    out_off = np.concatenate([[0], np.cumsum(sizes * channels)]).astype(np.int64)
    buf_off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return ns, out_off, buf_off


def _set_threads() -> None:
    """numba's kernels use as many threads as torch. Launching numba's OpenMP layer (on the
    first call) sets the process-wide OpenMP thread count to NUMBA_NUM_THREADS, which is
    torch's too: torch's own count is put back, so a user's (or OMP_NUM_THREADS') setting holds."""
    want = torch.get_num_threads()
    _numba.set_num_threads(max(1, min(want, _numba.config.NUMBA_NUM_THREADS)))
    if torch.get_num_threads() != want:
        torch.set_num_threads(want)


def _numba_plan(levels: tuple[int, ...], n_ch: int) -> tuple[np.ndarray, ...]:
    """Level arrays in processing order (finest first), for the max kernels."""
    ns, out_off, buf_off = _level_layout(levels, n_ch)
    derive = np.asarray(derivation_plan(levels), dtype=np.int64)
    order = np.argsort(-ns, kind="stable")  # finer levels first, so sources exist
    return ns[order], out_off[:-1][order], _reorder_buf(buf_off, order), _reindex(derive, order)


def _numba_forward(features: Tensor, bidx: Tensor, cells: Tensor, levels: tuple[int, ...],
                   mode: str, out: Tensor | None = None) -> Tensor:
    n_ch = features.shape[1]
    feat = _nhwc_numpy(features)
    b = bidx.detach().to(torch.int64).contiguous().numpy()
    c = cells.detach().contiguous().numpy()
    kdtype = _kernel_dtype(features.dtype)
    target = out if out is not None and out.dtype == kdtype else pooled_empty(
        (c.shape[0], spp_output_dim(n_ch, levels)), kdtype)
    _set_threads()
    if mode == "max":
        _kernels.window_pool_max_fwd(feat, b, c, *_numba_plan(levels, n_ch), target.numpy())
    else:
        ns, out_off, _ = _level_layout(levels, n_ch)
        _kernels.window_pool_avg_fwd(feat, b, c, ns, out_off[:-1], target.numpy())
    if out is not None and target is not out:
        out.copy_(target)
        return out
    return target.to(features.dtype)


# The compiled path as torch.library custom ops (forward, backward, fake kernels for tracing),
# so a model that pools windows runs under torch.compile(fullgraph=True) without graph breaks.
@torch.library.custom_op("sppnet::window_pool", mutates_args=(), device_types="cpu")
def _window_pool_op(features: Tensor, bidx: Tensor, cells: Tensor, levels: list[int],
                    mode: str) -> Tensor:
    out = _numba_forward(features, bidx, cells, tuple(levels), mode)
    return out.clone() if out is features else out


@_window_pool_op.register_fake
def _(features, bidx, cells, levels, mode):
    # (shapes may be symbolic here: no int checks)
    return features.new_empty(cells.shape[0], features.shape[1] * sum(n * n for n in levels))


@torch.library.custom_op("sppnet::window_pool_backward", mutates_args=(), device_types="cpu")
def _window_pool_backward_op(grad_out: Tensor, features: Tensor, bidx: Tensor, cells: Tensor,
                             levels: list[int], mode: str) -> Tensor:
    n_ch = features.shape[1]
    feat = _nhwc_numpy(features)
    grad = np.zeros(feat.shape, dtype=feat.dtype)
    g = grad_out.detach().to(_kernel_dtype(features.dtype)).contiguous().numpy()
    b = bidx.to(torch.int64).contiguous().numpy()
    c = cells.contiguous().numpy()
    _set_threads()
    chunk = max(1, -(-n_ch // _numba.get_num_threads()))  # one wide slice per thread
    if mode == "max":
        _kernels.window_pool_max_bwd(feat, b, c, *_numba_plan(tuple(levels), n_ch), g, chunk,
                                     grad)
    else:
        ns, out_off, _ = _level_layout(tuple(levels), n_ch)
        _kernels.window_pool_avg_bwd(feat, b, c, ns, out_off[:-1], g, chunk, grad)
    return torch.from_numpy(grad).permute(0, 3, 1, 2).to(features.dtype).contiguous(
        memory_format=torch.channels_last)


@_window_pool_backward_op.register_fake
def _(grad_out, features, bidx, cells, levels, mode):
    return torch.empty_like(features, memory_format=torch.channels_last)


def _setup_context(ctx, inputs, output) -> None:
    features, bidx, cells, levels, mode = inputs
    ctx.save_for_backward(features, bidx, cells)
    ctx.levels, ctx.mode = levels, mode


def _backward(ctx, grad_out: Tensor):
    features, bidx, cells = ctx.saved_tensors
    grad = torch.ops.sppnet.window_pool_backward(grad_out, features, bidx, cells, ctx.levels,
                                                 ctx.mode)
    return grad, None, None, None, None


_window_pool_op.register_autograd(_backward, setup_context=_setup_context)


def _reorder_buf(buf_off: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Buffer offsets for levels laid out in ``order`` (plus the total at the end)."""
    sizes = np.diff(buf_off)[order]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _reindex(derive: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``derive`` (indices into the original level order) re-expressed in ``order``."""
    pos = np.empty_like(order)
    pos[order] = np.arange(len(order))
    d = derive[order]
    return np.where(d < 0, -1, pos[np.maximum(d, 0)]).astype(np.int64)
