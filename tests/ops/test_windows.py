import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sppnet.ops import (
    numba_available,
    project_boxes,
    spp_output_dim,
    spp_pool,
    spp_pool_cells,
    spp_roi_pool,
)
from tests.reference import ref_project

BACKENDS = ["torch"] + (["numba"] if numba_available() else [])


def crop_reference(features, rois, levels, stride, offset, mode):
    """spp_pool of each projected crop, one window at a time."""
    cells = project_boxes(rois[:, 1:], stride, features.shape[-2:], offset)
    rows = []
    for (b, _, _, _, _), (x0, y0, x1, y1) in zip(rois.tolist(), cells.tolist()):
        crop = features[int(b):int(b) + 1, :, y0:y1 + 1, x0:x1 + 1]
        rows.append(spp_pool(crop, levels, mode))
    if not rows:
        return features.new_zeros((0, spp_output_dim(features.shape[1], levels)))
    return torch.cat(rows)


def random_rois(n, image_hw, n_images, seed):
    g = torch.Generator().manual_seed(seed)
    h, w = image_hw
    xy1 = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
    wh = torch.rand(n, 2, generator=g) ** 2 * torch.tensor([w, h])
    xy2 = torch.minimum(xy1 + wh, torch.tensor([w, h], dtype=torch.float32))
    b = torch.randint(0, n_images, (n, 1), generator=g).float()
    return torch.cat([b, xy1, xy2], 1)


# ---------------------------------------------------------------- projection

def test_project_boxes_hand_cases():
    boxes = torch.tensor([
        [0.0, 0.0, 223.0, 223.0],  # left floor(0)+1=1, right ceil(13.94)-1=13 -> clamp 12
        [40.0, 20.0, 100.0, 60.0],  # x: floor(2.5)+1=3, ceil(6.25)-1=6; y: 2, 3
        [30.0, 30.0, 34.0, 34.0],  # tiny: lo=2 > hi=2? x: floor(1.875)+1=2, ceil(2.125)-1=2
        [17.0, 17.0, 18.0, 18.0],  # tiny: lo=2, hi=1 -> collapse floor(1.5)=1
        [500.0, 500.0, 600.0, 600.0],  # outside a 13x13 map -> clamped to the last cell
    ])
    cells = project_boxes(boxes, 16, (13, 13))
    assert cells.dtype == torch.long
    assert cells.tolist() == [[1, 1, 12, 12], [3, 2, 6, 3], [2, 2, 2, 2], [1, 1, 1, 1],
                              [12, 12, 12, 12]]


def test_project_boxes_offset_and_stride():
    # cells centred at 12 * j + 5.5 (an Overfeat-like geometry)
    box = torch.tensor([[30.0, 10.0, 100.0, 200.0]])
    got = project_boxes(box, 12, (18, 18), offset=5.5).tolist()[0]
    assert got == ref_project(box[0].tolist(), 12, (18, 18), 5.5)
    assert got == [3, 1, 7, 16]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-50, 900), st.floats(-50, 900), st.floats(0, 400),
                          st.floats(0, 400)), min_size=1, max_size=20),
       st.sampled_from([4, 8, 12, 16, 32]), st.floats(-8, 8), st.integers(1, 60),
       st.integers(1, 60))
def test_project_boxes_matches_reference_and_covers_a_cell(raw, stride, offset, h, w):
    boxes = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in raw], dtype=torch.float64)
    cells = project_boxes(boxes, stride, (h, w), offset)
    for box, cell in zip(boxes.tolist(), cells.tolist()):
        assert cell == ref_project(box, stride, (h, w), offset)
        x0, y0, x1, y1 = cell
        assert 0 <= x0 <= x1 < w and 0 <= y0 <= y1 < h


# ---------------------------------------------------------------- window pooling

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("levels", [(6, 3, 2, 1), (4, 3, 2, 1), (1, 2, 4), (3, 6), (5,), (2, 2)])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_equals_spp_pool_of_projected_crops(backend, levels, mode):
    torch.manual_seed(1)
    feats = torch.randn(3, 6, 13, 17, dtype=torch.float64)
    rois = random_rois(80, (13 * 16, 17 * 16), 3, seed=2).double()
    out = spp_roi_pool(feats, rois, levels, 16, 0.0, mode, backend=backend)
    ref = crop_reference(feats, rois, levels, 16, 0.0, mode)
    assert out.shape == ref.shape == (80, spp_output_dim(6, levels))
    if mode == "max":
        assert torch.equal(out, ref)
    else:
        torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dtypes_layouts_exact(backend, dtype, channels_last):
    torch.manual_seed(3)
    feats = torch.randn(2, 16, 20, 9).to(dtype)
    if channels_last:
        feats = feats.contiguous(memory_format=torch.channels_last)
    rois = random_rois(60, (20 * 8, 9 * 8), 2, seed=4)
    out = spp_roi_pool(feats, rois, stride=8, offset=3.5, backend=backend)
    assert out.dtype == dtype
    assert torch.equal(out, crop_reference(feats, rois, (6, 3, 2, 1), 8, 3.5, "max"))


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 25), w=st.integers(1, 25), n_rois=st.integers(0, 30),
       levels=st.lists(st.integers(1, 7), min_size=1, max_size=4), seed=st.integers(0, 10_000))
def test_random_maps_and_windows(h, w, n_rois, levels, seed):
    torch.manual_seed(seed)
    feats = torch.randn(2, 3, h, w, dtype=torch.float64)
    rois = random_rois(n_rois, (h * 16, w * 16), 2, seed).double()
    ref = crop_reference(feats, rois, levels, 16, 0.0, "max")
    for backend in BACKENDS:
        assert torch.equal(spp_roi_pool(feats, rois, levels, backend=backend), ref)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.slow
def test_zero_windows(backend, mode):
    feats = torch.randn(2, 4, 5, 5, requires_grad=True)
    out = spp_roi_pool(feats, torch.zeros(0, 5), mode=mode, backend=backend)
    assert out.shape == (0, 4 * 50)
    out.sum().backward()
    assert feats.grad is None or torch.count_nonzero(feats.grad) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_cell_map_and_window(backend):
    feats = torch.randn(1, 3, 1, 1)
    out = spp_roi_pool(feats, torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0]]), backend=backend)
    expected = torch.cat([feats.reshape(3, 1).expand(3, n * n).reshape(-1) for n in (6, 3, 2, 1)])
    assert torch.equal(out[0], expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_gradcheck(backend, mode):
    torch.manual_seed(5)
    feats = torch.randn(2, 3, 9, 7, dtype=torch.float64, requires_grad=True)
    rois = random_rois(12, (9 * 16, 7 * 16), 2, seed=6).double()

    def fn(f):
        return spp_roi_pool(f, rois, (4, 3, 2, 1), mode=mode, backend=backend)

    assert torch.autograd.gradcheck(fn, (feats,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_gradient_equals_crop_reference(backend, mode):
    torch.manual_seed(7)
    base = torch.randn(2, 5, 14, 11, dtype=torch.float64)
    rois = random_rois(40, (14 * 16, 11 * 16), 2, seed=8).double()
    g = torch.randn(40, 5 * 50, dtype=torch.float64)
    a = base.clone().requires_grad_()
    (crop_reference(a, rois, (6, 3, 2, 1), 16, 0.0, mode) * g).sum().backward()
    b = base.clone().requires_grad_()
    (spp_roi_pool(b, rois, mode=mode, backend=backend) * g).sum().backward()
    torch.testing.assert_close(b.grad, a.grad)


def test_backends_agree_and_out_buffer():
    torch.manual_seed(9)
    feats = torch.randn(1, 32, 20, 30).contiguous(memory_format=torch.channels_last)
    rois = random_rois(200, (320, 480), 1, seed=10)
    outs = [spp_roi_pool(feats, rois, backend=b) for b in BACKENDS]
    for o in outs[1:]:
        assert torch.equal(o, outs[0])
    buf = torch.full((200, 32 * 50), 7.0)
    res = spp_roi_pool(feats, rois, out=buf)
    assert res.data_ptr() == buf.data_ptr()
    assert torch.equal(buf, outs[0])


def test_spp_pool_cells_direct():
    feats = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    cells = torch.tensor([[0, 0, 3, 3], [1, 1, 2, 2]])
    out = spp_pool_cells(feats, cells, torch.tensor([1, 0]), levels=(1, 2))
    assert out.tolist() == [[31.0, 21.0, 23.0, 29.0, 31.0], [10.0, 5.0, 6.0, 9.0, 10.0]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_square_map_and_unequal_window_sides_by_hand(backend):
    """A 3 x 5 map holding 5 * y + x, windows wider than tall and taller than wide away from
    the diagonal: reading x for y anywhere (projection, clamp or kernel) gives other values."""
    feats = torch.arange(15, dtype=torch.float32).reshape(1, 1, 3, 5)
    #  0  1  2  3  4
    #  5  6  7  8  9
    # 10 11 12 13 14
    rois = torch.tensor([[0.0, 20.0, 4.0, 70.0, 30.0],  # 50 px wide, 26 tall
                         [0.0, 40.0, 10.0, 200.0, 60.0]])  # runs off the right and bottom
    # stride 16, offset 0: x0 = floor(20 / 16) + 1 = 2, x1 = ceil(70 / 16) - 1 = 4,
    # y0 = floor(4 / 16) + 1 = 1, y1 = ceil(30 / 16) - 1 = 1;
    # x0 = floor(2.5) + 1 = 3, x1 = ceil(12.5) - 1 = 12 -> W - 1 = 4,
    # y0 = floor(0.625) + 1 = 1, y1 = ceil(3.75) - 1 = 3 -> H - 1 = 2
    cells = project_boxes(rois[:, 1:], 16, (3, 5))
    assert cells.tolist() == [[2, 1, 4, 1], [3, 1, 4, 2]]
    # levels (1, 2). Crop [[7, 8, 9]]: 1 x 1 -> 9; 2 x 2 bins, rows [0, 1) [0, 1) (one row),
    # cols [0, 2) [1, 3) -> 8 9 / 8 9. Crop [[8, 9], [13, 14]]: 14; 8 9 / 13 14.
    want = [[9.0, 8.0, 9.0, 8.0, 9.0], [14.0, 8.0, 9.0, 13.0, 14.0]]
    assert spp_roi_pool(feats, rois, (1, 2), 16, backend=backend).tolist() == want
    got = spp_pool_cells(feats, cells, torch.zeros(2, dtype=torch.long), (1, 2), backend=backend)
    assert got.tolist() == want
    # cells given directly: rows 1-2 x cols 0-1 = [[5, 6], [10, 11]] (read as x 1-2, y 0-1 it
    # would be [[1, 2], [6, 7]])
    got = spp_pool_cells(feats, torch.tensor([[0, 1, 1, 2]]), torch.zeros(1, dtype=torch.long),
                         (1, 2), backend=backend)
    assert got.tolist() == [[11.0, 5.0, 6.0, 10.0, 11.0]]


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("rois,err,match", [
    (torch.zeros(3, 4), ValueError, r"rois must have shape \(R, 5\), got shape \(3, 4\)"),
    (torch.tensor([[0.0, 5.0, 0.0, 1.0, 4.0]]), ValueError, r"x2 >= x1.*row 0"),
    (torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0], [0.0, 0.0, float("nan"), 1.0, 1.0]]), ValueError,
     "rois must be finite, got NaN/inf in row 1"),
    (torch.tensor([[0.0, 0.0, 0.0, float("inf"), 1.0]]), ValueError, "finite"),
    (torch.tensor([[2.0, 0.0, 0.0, 1.0, 1.0]]), ValueError,
     r"batch index 2 in row 0 is out of range for features with N=2"),
    (torch.tensor([[-1.0, 0.0, 0.0, 1.0, 1.0]]), ValueError, "batch index -1"),
    (torch.tensor([[0.5, 0.0, 0.0, 1.0, 1.0]]), ValueError, "integer batch indices, got 0.5"),
    ("rois", TypeError, "rois must be a torch.Tensor"),
])
def test_bad_rois(rois, err, match):
    with pytest.raises(err, match=match):
        spp_roi_pool(torch.randn(2, 3, 5, 5), rois)


def test_bad_arguments():
    feats, rois = torch.randn(1, 3, 5, 5), torch.zeros(1, 5)
    with pytest.raises(ValueError, match="stride must be a positive finite number, got stride=0"):
        spp_roi_pool(feats, rois, stride=0)
    with pytest.raises(ValueError, match="stride=-16"):
        project_boxes(rois[:, 1:], -16, (5, 5))
    with pytest.raises(ValueError, match="offset must be finite"):
        spp_roi_pool(feats, rois, offset=float("nan"))
    with pytest.raises(ValueError, match="mode must be one of"):
        spp_roi_pool(feats, rois, mode="median")
    with pytest.raises(ValueError, match="levels must be positive"):
        spp_roi_pool(feats, rois, levels=(0,))
    with pytest.raises(ValueError, match=r"backend must be one of .*got backend='cuda'"):
        spp_roi_pool(feats, rois, backend="cuda")
    with pytest.raises(ValueError, match=r"features must have shape \(N, C, H, W\)"):
        spp_roi_pool(feats[0], rois)
    with pytest.raises(ValueError, match=r"map_size must be \(H, W\) with H, W >= 1"):
        project_boxes(rois[:, 1:], 16, (0, 5))
    with pytest.raises(ValueError, match=r"out must have shape \(1, 150\), got \(2, 150\)"):
        spp_roi_pool(feats, rois, out=torch.empty(2, 150))
    with pytest.raises(RuntimeError, match="out= is not differentiable"):
        spp_roi_pool(feats.requires_grad_(), rois, out=torch.empty(1, 150))


def test_bad_cells():
    feats = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match=r"cells row 0 = \[0, 0, 4, 3\] is not an inclusive"):
        spp_pool_cells(feats, torch.tensor([[0, 0, 4, 3]]), torch.tensor([0]))
    with pytest.raises(TypeError, match="cells must have dtype torch.long"):
        spp_pool_cells(feats, torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"batch_index must have shape \(1,\)"):
        spp_pool_cells(feats, torch.tensor([[0, 0, 1, 1]]), torch.tensor([0, 0]))


@pytest.mark.slow
def test_the_numba_kernels_leave_torchs_thread_count_alone():
    """numba's OpenMP layer, launched by the first window pooling, set the process-wide OpenMP
    thread count to all cores, and torch with it: a process started with OMP_NUM_THREADS=1 (or
    torch.set_num_threads(1)) ran torch on 2 threads afterwards. A fresh process shows it."""
    import os
    import subprocess
    import sys

    from sppnet.ops import numba_available

    if not numba_available():
        pytest.skip("numba is not installed")
    code = ("import torch; from sppnet.ops import spp_roi_pool;"
            "x = torch.randn(1, 8, 10, 10); r = torch.tensor([[0, 0, 0, 50, 50.0]]);"
            "spp_roi_pool(x, r, backend='numba'); print(torch.get_num_threads())")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "1"
