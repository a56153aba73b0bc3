"""Compiled (numba) CPU kernels for pyramid pooling of many windows of channels-last maps.

Layouts: ``feat`` is ``(N, H, W, C)`` (a channels_last tensor viewed as NHWC, no copy), ``cells``
is ``(R, 4)`` int64 inclusive ``(x0, y0, x1, y1)`` map cells, ``out`` is ``(R, D)`` with each level
flattened ``(C, n, n)`` exactly like :func:`sppnet.ops.spp_pool`.

Max pooling gives ``adaptive_max_pool2d``'s values: the bin maximum, NaN if the bin holds a NaN.
(The sign of a zero tied with a zero of the other sign may differ; the values compare equal.)
Levels listed in ``derive`` are the max over ``k x k`` groups of an already computed finer level
(exact for floor/ceil bins), so each window is scanned once. The inner loops run over channels on
1-D contiguous slices, the form LLVM vectorizes.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _bin_start(i, length, n):  # pragma: no cover - compiled
    return (i * length) // n


@njit(cache=True, inline="always")
def _bin_end(i, length, n):  # pragma: no cover - compiled
    return ((i + 1) * length + n - 1) // n


@njit(cache=True, inline="always")
def _span(start, i, length, n):  # pragma: no cover - compiled
    """Bin ``i`` of ``n`` over ``length`` cells from ``start``: ``(first, end)``, end
    exclusive."""
    return start + _bin_start(i, length, n), start + _bin_end(i, length, n)


@njit(cache=True, inline="always")
def _window(bidx, cells, r):  # pragma: no cover - compiled
    """Image, first cell ``(x0, y0)`` and size ``(w, h)`` in cells of window ``r``."""
    x0 = cells[r, 0]
    y0 = cells[r, 1]
    return bidx[r], x0, y0, cells[r, 2] - x0 + 1, cells[r, 3] - y0 + 1


@njit(cache=True, inline="always", error_model="numpy")
def _max_into(acc, v):  # pragma: no cover - compiled
    for c in range(acc.shape[0]):
        acc[c] = np.maximum(v[c], acc[c])


@njit(cache=True, inline="always", error_model="numpy")
def _add_into(acc, v):  # pragma: no cover - compiled
    for c in range(acc.shape[0]):
        acc[c] += v[c]


@njit(cache=True, inline="always", error_model="numpy")
def _take_max(best, arg, c, x, a):  # pragma: no cover - compiled
    # adaptive_max_pool2d's rule: first maximum in scan order wins; a NaN takes over.
    take = (x > best[c]) | (x != x)
    best[c] = x if take else best[c]
    arg[c] = a if take else arg[c]


@njit(cache=True, inline="always", error_model="numpy")
def _argmax_into(best, arg, v, pos):  # pragma: no cover - compiled
    for c in range(best.shape[0]):
        _take_max(best, arg, c, v[c], pos)


@njit(cache=True, inline="always", error_model="numpy")
def _argmax_pick(best, arg, v, varg):  # pragma: no cover - compiled
    for c in range(best.shape[0]):
        _take_max(best, arg, c, v[c], varg[c])


@njit(parallel=True, cache=True, error_model="numpy")
def window_pool_max_fwd(feat, bidx, cells, ns, out_off, buf_off, derive, out):  # pragma: no cover
    """Levels are given finest first; ``derive[l]`` is a finer level whose bins group exactly
    into level ``l``'s, or -1. A bin whose row and column ranges equal its upper/left
    neighbour's (small windows) is not pooled again: ``alias`` points it at that neighbour."""
    n_windows = cells.shape[0]
    n_ch = feat.shape[3]
    n_lvl = ns.shape[0]
    total_bins = buf_off[n_lvl]
    n_chunks = min(n_windows, 64)
    for t in prange(n_chunks):  # scratch once per chunk; windows interleaved for balance
        buf = np.empty((total_bins, n_ch), dtype=feat.dtype)
        alias = np.empty(total_bins, dtype=np.int64)
        for r in range(t, n_windows, n_chunks):
            b, x0, y0, w, h = _window(bidx, cells, r)
            for li in range(n_lvl):
                n = ns[li]
                src = derive[li]
                for i in range(n):
                    ys = _bin_start(i, h, n)
                    ye = _bin_end(i, h, n)
                    same_row = i > 0 and ys == _bin_start(i - 1, h, n) and (
                        ye == _bin_end(i - 1, h, n))
                    for j in range(n):
                        q = buf_off[li] + i * n + j
                        xs = _bin_start(j, w, n)
                        xe = _bin_end(j, w, n)
                        if same_row:
                            alias[q] = alias[q - n]
                            continue
                        if j > 0 and xs == _bin_start(j - 1, w, n) and xe == _bin_end(j - 1, w, n):
                            alias[q] = alias[q - 1]
                            continue
                        alias[q] = q
                        m = buf[q]
                        m[:] = -np.inf
                        if src < 0:
                            for yy in range(y0 + ys, y0 + ye):
                                for xx in range(x0 + xs, x0 + xe):
                                    _max_into(m, feat[b, yy, xx])
                        else:
                            nf = ns[src]
                            k = nf // n
                            for fi in range(i * k, i * k + k):
                                for fj in range(j * k, j * k + k):
                                    _max_into(m, buf[alias[buf_off[src] + fi * nf + fj]])
            for li in range(n_lvl):  # (bins, C) -> (C, n, n); bins outer measured 2x faster
                # than channel-blocked sequential writes (28 vs 19 ms for the bench case)
                nn = ns[li] * ns[li]
                for q in range(nn):
                    row = buf[alias[buf_off[li] + q]]
                    orow = out[r, out_off[li] + q: out_off[li] + q + nn * n_ch]
                    for c in range(n_ch):
                        orow[c * nn] = row[c]


@njit(parallel=True, cache=True, error_model="numpy")
def window_pool_avg_fwd(feat, bidx, cells, ns, out_off, out):  # pragma: no cover
    n_windows = cells.shape[0]
    n_ch = feat.shape[3]
    n_lvl = ns.shape[0]
    for r in prange(n_windows):
        b, x0, y0, w, h = _window(bidx, cells, r)
        acc = np.empty(n_ch, dtype=np.float64)
        for li in range(n_lvl):
            n = ns[li]
            for i in range(n):
                ys, ye = _span(y0, i, h, n)
                for j in range(n):
                    xs, xe = _span(x0, j, w, n)
                    acc[:] = 0.0
                    for yy in range(ys, ye):
                        for xx in range(xs, xe):
                            _add_into(acc, feat[b, yy, xx])
                    inv = 1.0 / ((ye - ys) * (xe - xs))
                    base = out_off[li] + i * n + j
                    for c in range(n_ch):
                        out[r, base + c * n * n] = acc[c] * inv


@njit(parallel=True, cache=True, error_model="numpy")
def window_pool_max_bwd(feat, bidx, cells, ns, out_off, buf_off, derive, grad_out, chunk,
                        grad_feat):  # pragma: no cover
    """Scatter ``grad_out (R, D)`` of max pooling into ``grad_feat (N, H, W, C)``.

    Same level plan as the forward. Parallel over channel chunks, so no two threads write the
    same element. Each bin's gradient goes to one maximal element: the first in row-major order
    for directly pooled bins (``adaptive_max_pool2d``'s rule); for a derived coarse bin, the
    arg-max of the first fine bin holding the maximum (the same element unless distinct elements
    tie)."""
    n_windows = cells.shape[0]
    n_ch = feat.shape[3]
    width = feat.shape[2]
    n_lvl = ns.shape[0]
    total_bins = buf_off[n_lvl]
    n_chunks = (n_ch + chunk - 1) // chunk
    gflat = grad_feat.reshape(grad_feat.shape[0], grad_feat.shape[1] * width, n_ch)
    for t in prange(n_chunks):
        c0 = t * chunk
        c1 = min(n_ch, c0 + chunk)
        best = np.empty((total_bins, c1 - c0), dtype=feat.dtype)
        arg = np.empty((total_bins, c1 - c0), dtype=np.int32)  # flat y * W + x; same width
        # as float32 so that the select vectorizes
        for r in range(n_windows):
            b, x0, y0, w, h = _window(bidx, cells, r)
            for li in range(n_lvl):
                n = ns[li]
                nn = n * n
                src = derive[li]
                for i in range(n):
                    ys = _bin_start(i, h, n)
                    ye = _bin_end(i, h, n)
                    for j in range(n):
                        q = buf_off[li] + i * n + j
                        xs = _bin_start(j, w, n)
                        xe = _bin_end(j, w, n)
                        bq = best[q]
                        aq = arg[q]
                        bq[:] = -np.inf
                        if src < 0:
                            aq[:] = np.int32((y0 + ys) * width + x0 + xs)
                            for yy in range(y0 + ys, y0 + ye):
                                for xx in range(x0 + xs, x0 + xe):
                                    _argmax_into(bq, aq, feat[b, yy, xx, c0:c1],
                                                 np.int32(yy * width + xx))
                        else:
                            nf = ns[src]
                            k = nf // n
                            aq[:] = arg[buf_off[src] + i * k * nf + j * k]
                            for fi in range(i * k, i * k + k):
                                for fj in range(j * k, j * k + k):
                                    fq = buf_off[src] + fi * nf + fj
                                    _argmax_pick(bq, aq, best[fq], arg[fq])
                        gbase = out_off[li] + i * n + j
                        for c in range(c0, c1):
                            gflat[b, aq[c - c0], c] += grad_out[r, gbase + c * nn]


@njit(parallel=True, cache=True, error_model="numpy")
def window_pool_avg_bwd(feat, bidx, cells, ns, out_off, grad_out, chunk,
                        grad_feat):  # pragma: no cover
    """Scatter ``grad_out (R, D)`` of average pooling into ``grad_feat (N, H, W, C)``, spread
    evenly over each bin; parallel over channel chunks."""
    n_windows = cells.shape[0]
    n_ch = feat.shape[3]
    n_lvl = ns.shape[0]
    n_chunks = (n_ch + chunk - 1) // chunk
    for t in prange(n_chunks):
        c0 = t * chunk
        c1 = min(n_ch, c0 + chunk)
        g = np.empty(c1 - c0, dtype=feat.dtype)
        for r in range(n_windows):
            b, x0, y0, w, h = _window(bidx, cells, r)
            for li in range(n_lvl):
                n = ns[li]
                nn = n * n
                for i in range(n):
                    ys, ye = _span(y0, i, h, n)
                    for j in range(n):
                        xs, xe = _span(x0, j, w, n)
                        gbase = out_off[li] + i * n + j
                        inv = 1.0 / ((ye - ys) * (xe - xs))
                        for c in range(c0, c1):
                            g[c - c0] = grad_out[r, gbase + c * nn] * inv
                        for yy in range(ys, ye):
                            for xx in range(xs, xe):
                                _add_into(grad_feat[b, yy, xx, c0:c1], g)
