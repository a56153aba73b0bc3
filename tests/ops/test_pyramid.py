import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sppnet.ops import bin_edges, spp_output_dim, spp_pool
from sppnet.ops.pyramid import _pool_level_masked, derivation_plan
from tests.reference import ref_bins, ref_spp

# sizes that break the public recipes (a, n): sliding window ceil/floor gives the wrong count or
# misses cells; Caffe-style padding is rejected for 13/6; maps smaller than the level; 1x1.
BREAKING = [(10, 6), (11, 4), (13, 6), (7, 4), (6, 4), (3, 6), (1, 6), (5, 3)]


@pytest.mark.parametrize("a,n", BREAKING + [(13, 1), (43, 6), (57, 6), (9, 9)])
def test_bin_edges_match_the_appendix_and_cover_every_cell(a, n):
    edges = bin_edges(a, n)
    assert edges == ref_bins(a, n)
    assert len(edges) == n
    covered = set()
    for s, e in edges:
        assert 0 <= s < e <= a  # never empty
        covered.update(range(s, e))
    assert covered == set(range(a))


def test_public_sliding_window_recipe_is_wrong_where_ours_is_right():
    # window ceil(a/n), stride floor(a/n): 9 bins instead of 6 for a=10, 5 instead of 4 for 11
    for a, n, wrong in [(10, 6, 9), (11, 4, 5)]:
        x = torch.randn(1, 1, a, a)
        k, s = math.ceil(a / n), math.floor(a / n)
        assert F.max_pool2d(x, k, s).shape[-1] == wrong
        assert spp_pool(x, (n,)).shape[-1] == n * n


def test_output_dim_zf5():
    assert spp_output_dim(256, (6, 3, 2, 1)) == 12800
    assert spp_output_dim(256, (4, 3, 2, 1)) == 256 * 30
    assert spp_output_dim(3, 5) == 75


@pytest.mark.parametrize("a,n", BREAKING)
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_single_level_matches_reference(a, n, mode):
    torch.manual_seed(a * 100 + n)
    x = torch.randn(2, 3, a, a + 1, dtype=torch.float64)
    out = spp_pool(x, (n,), mode)
    ref = ref_spp(x, (n,), mode)
    if mode == "max":
        assert torch.equal(out, ref)
    else:
        torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("levels", [(6, 3, 2, 1), (4, 3, 2, 1), (1, 2, 3, 6), (3, 6), (5,),
                                    (2, 2), (8, 4, 2, 1)])
@pytest.mark.parametrize("hw", [(13, 13), (10, 10), (7, 9), (5, 3), (1, 1), (40, 57)])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pyramid_matches_reference(levels, hw, mode):
    torch.manual_seed(sum(hw))
    x = torch.randn(2, 4, *hw, dtype=torch.float64)
    out = spp_pool(x, levels, mode)
    assert out.shape == (2, spp_output_dim(4, levels))
    ref = ref_spp(x, levels, mode)
    if mode == "max":
        assert torch.equal(out, ref)
    else:
        torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dtypes_and_memory_formats(dtype, channels_last):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 11, 7).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = spp_pool(x)
    assert out.dtype == dtype and out.shape == (3, 5 * 50)
    # max pooling selects, so even bfloat16 equals the float64 reference of the same values
    assert torch.equal(out.double(), ref_spp(x, (6, 3, 2, 1)))
    avg = spp_pool(x, mode="avg")
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(avg.double(), ref_spp(x, (6, 3, 2, 1), "avg"), rtol=tol, atol=tol)


def test_nan_propagates_like_adaptive_max_pool():
    x = torch.randn(1, 2, 6, 6)
    x[0, 1, 4, 4] = float("nan")
    out = spp_pool(x, (3, 1))
    ref = torch.cat([F.adaptive_max_pool2d(x, n).flatten(1) for n in (3, 1)], 1)
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(out.nan_to_num(), ref.nan_to_num())


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30),
       levels=st.lists(st.integers(1, 8), min_size=1, max_size=4), mode=st.sampled_from(
           ["max", "avg"]))
def test_random_sizes_match_reference(h, w, levels, mode):
    x = torch.randn(1, 2, h, w, dtype=torch.float64)
    out = spp_pool(x, levels, mode)
    ref = ref_spp(x, levels, mode)
    if mode == "max":
        assert torch.equal(out, ref)
    else:
        torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("hw", [(13, 13), (10, 10), (7, 9), (5, 3), (1, 1), (40, 57)])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_export_path_equals_eager_path(hw, mode):
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    for n in (6, 3, 2, 1, 4):
        eager = spp_pool(x, (n,), mode)
        masked = _pool_level_masked(x, n, mode).reshape(2, -1)
        if mode == "max":
            assert torch.equal(eager, masked)
        else:
            torch.testing.assert_close(eager, masked)


def test_derivation_plan_uses_coarsest_divisible_source():
    assert derivation_plan((6, 3, 2, 1)) == [-1, 0, 0, 2]
    assert derivation_plan((4, 3, 2, 1)) == [-1, -1, 0, 2]
    assert derivation_plan((5,)) == [-1]
    assert derivation_plan((2, 2)) == [-1, -1]


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_gradcheck(mode):
    torch.manual_seed(0)
    x = torch.randn(2, 2, 7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: spp_pool(t, (4, 3, 2, 1), mode), (x,))
    y = torch.randn(1, 2, 13, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: spp_pool(t, (6, 3, 2, 1), mode), (y,))


@pytest.mark.parametrize("bad,err,match", [
    (torch.randn(3, 4, 5), ValueError, r"x must have shape \(N, C, H, W\), got shape \(3, 4, 5\)"),
    (torch.ones(1, 1, 3, 3, dtype=torch.long), TypeError, "floating-point.*torch.int64"),
    ([[1.0]], TypeError, "x must be a torch.Tensor"),
    (torch.randn(1, 1, 0, 3), ValueError, r"H, W >= 1.*\(1, 1, 0, 3\)"),
])
def test_bad_input(bad, err, match):
    with pytest.raises(err, match=match):
        spp_pool(bad)


@pytest.mark.parametrize("levels,err,match", [
    ((), ValueError, "levels must not be empty"),
    ((6, 0, 1), ValueError, r"levels must be positive, got 0 in levels=\(6, 0, 1\)"),
    ((6, -2), ValueError, "got -2"),
    ((6, 2.5), TypeError, "levels must contain ints, got 2.5"),
    ("631", TypeError, "levels must be a sequence"),
])
def test_bad_levels(levels, err, match):
    with pytest.raises(err, match=match):
        spp_pool(torch.randn(1, 1, 4, 4), levels)
    with pytest.raises(err, match=match):
        spp_output_dim(4, levels)


def test_bad_mode_and_channels():
    with pytest.raises(ValueError, match=r"mode must be one of \('max', 'avg'\), got mode='sum'"):
        spp_pool(torch.randn(1, 1, 4, 4), mode="sum")
    with pytest.raises(ValueError, match="channels must be a positive int, got channels=0"):
        spp_output_dim(0)


@pytest.mark.parametrize("shape", [(0, 3, 5, 7), (2, 0, 5, 7)])
def test_spp_pool_empty_batch_or_channels(shape):
    x = torch.zeros(shape, requires_grad=True)
    y = spp_pool(x, (2, 1))
    assert y.shape == (shape[0], shape[1] * 5)
    y.sum().backward()
    assert x.grad.shape == shape
