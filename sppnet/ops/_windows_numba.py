"""Window pooling by compiled CPU kernels (the ``"numba"`` backend of :mod:`sppnet.ops.windows`):
one scan over each window (coarse levels derived from the finest one), parallel over windows;
backward parallel over channel groups. Registered as the ``torch.library`` custom ops
``sppnet::window_pool`` and ``sppnet::window_pool_backward`` (forward, backward and fake
kernels), so a model that pools windows runs under ``torch.compile(fullgraph=True)``.

Importing this module needs numba (:mod:`sppnet.ops.windows` falls back to the torch backend
without it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba as _numba
import numpy as np
import torch
from torch import Tensor

from . import _window_kernels as _kernels
from ._buffers import pooled_empty
from ._levels import derivation_plan, spp_output_dim

__all__ = ["numba_forward"]


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


def numba_forward(features: Tensor, bidx: Tensor, cells: Tensor, levels: tuple[int, ...],
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
    out = numba_forward(features, bidx, cells, tuple(levels), mode)
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
