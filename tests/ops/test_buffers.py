"""The output pool: memory of dropped outputs is reused, never that of a live tensor."""

from __future__ import annotations

import gc

import pytest
import torch

from sppnet.ops import _buffers, spp_roi_pool
from sppnet.ops.windows import numba_available
from tests.reference import ref_project, ref_spp


@pytest.fixture
def small_pool(monkeypatch):
    monkeypatch.setattr(_buffers, "MIN_BYTES", 1 << 10)
    old = _buffers.set_cache_limit(64 << 20)
    _buffers.empty_cache()
    yield
    _buffers.set_cache_limit(old)
    _buffers.empty_cache()


def test_pool_reuses_only_dropped_outputs(small_pool):
    a = _buffers.pooled_empty((100, 50), torch.float32)
    a.fill_(1.0)
    b = _buffers.pooled_empty((100, 50), torch.float32)  # a is alive: fresh memory
    assert a.data_ptr() != b.data_ptr()
    b.fill_(2.0)
    assert bool((a == 1).all())
    ptr = a.data_ptr()
    view = a[3:]  # a view keeps the storage alive
    del a
    gc.collect()
    assert _buffers.cached_bytes() == 0
    del view
    gc.collect()
    assert _buffers.cached_bytes() == 100 * 50 * 4
    c = _buffers.pooled_empty((100, 50), torch.float32)
    assert c.data_ptr() == ptr and _buffers.cached_bytes() == 0
    d = _buffers.pooled_empty((1000, 500), torch.float32)  # too large for any cached block
    assert d.shape == (1000, 500) and d.is_contiguous()


def test_pool_limit_and_off(small_pool):
    _buffers.set_cache_limit(10_000)
    x = _buffers.pooled_empty((100, 50), torch.float32)  # 20 kB > limit: not kept when dropped
    del x
    gc.collect()
    assert _buffers.cached_bytes() == 0
    _buffers.set_cache_limit(0)
    y = _buffers.pooled_empty((100, 50), torch.float64)
    assert y.dtype == torch.float64 and y.shape == (100, 50)
    with pytest.raises(ValueError, match="nbytes must be >= 0"):
        _buffers.set_cache_limit(-1)


def ref_roi_pool(feats: torch.Tensor, rois: torch.Tensor, levels, stride: int) -> torch.Tensor:
    rows = []
    for b, *box in rois.tolist():
        x0, y0, x1, y1 = ref_project(box, stride, feats.shape[-2:])
        rows.append(ref_spp(feats[int(b):int(b) + 1, :, y0:y1 + 1, x0:x1 + 1], levels)[0])
    return torch.stack(rows).to(feats.dtype)


@pytest.mark.skipif(not numba_available(), reason="the pool serves the numba path")
def test_window_pooling_from_the_pool_is_exact(small_pool):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 8, 9, 11, generator=g).contiguous(memory_format=torch.channels_last)
    boxes = torch.tensor([[0, 0.0, 0.0, 170.0, 140.0], [1, 16.0, 20.0, 60.0, 90.0],
                          [0, 30.0, 30.0, 31.0, 33.0]])
    expect = ref_roi_pool(feats, boxes, (6, 3, 2, 1), 16)
    first = spp_roi_pool(feats, boxes)
    ptr = first.data_ptr()
    second = spp_roi_pool(feats * 2, boxes)  # first still alive: must not be overwritten
    torch.testing.assert_close(first, expect, rtol=0, atol=0)
    torch.testing.assert_close(second, 2 * expect, rtol=0, atol=0)
    del first
    gc.collect()
    third = spp_roi_pool(feats, boxes)
    assert third.data_ptr() == ptr
    torch.testing.assert_close(third, expect, rtol=0, atol=0)
    torch.testing.assert_close(second, 2 * expect, rtol=0, atol=0)
    f = feats.detach().requires_grad_()
    spp_roi_pool(f, boxes).sum().backward()  # autograd through a pooled output
    assert f.grad is not None and f.grad.abs().sum() > 0
