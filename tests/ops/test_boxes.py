import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sppnet.ops import batched_nms, box_area, box_iou, clip_boxes, nms, remove_small_boxes
from tests.reference import ref_iou, ref_nms


def random_boxes(n, seed, size=100.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2
    return torch.cat([xy, xy + wh], 1)


def test_area_and_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 20.0, 30.0]])
    assert box_area(a).tolist() == [100.0, 100.0, 0.0]
    iou = box_iou(a, a)
    assert iou[0, 1].item() == pytest.approx(25 / 175)  # continuous coordinates, no +1
    assert iou[0, 0] == 1 and iou[0, 2] == 0
    assert iou[2, 2] == 0  # empty union gives 0, not NaN


def test_iou_matches_reference():
    a, b = random_boxes(30, 0), random_boxes(20, 1)
    got = box_iou(a, b)
    assert got.shape == (30, 20)
    for i in range(30):
        for j in range(20):
            assert got[i, j].item() == pytest.approx(ref_iou(a[i].tolist(), b[j].tolist()),
                                                     abs=1e-6)


def test_clip_and_remove_small():
    boxes = torch.tensor([[-5.0, -2.0, 50.0, 70.0], [10.0, 10.0, 11.0, 30.0]])
    assert clip_boxes(boxes, (60, 40)).tolist() == [[0.0, 0.0, 40.0, 60.0],
                                                    [10.0, 10.0, 11.0, 30.0]]
    assert remove_small_boxes(boxes, 2.0).tolist() == [0]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_slow_reference(seed, thr):
    boxes = random_boxes(150, seed)
    scores = torch.rand(150, generator=torch.Generator().manual_seed(seed + 100))
    assert nms(boxes, scores, thr).tolist() == ref_nms(boxes, scores, thr)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 60), st.floats(0, 1), st.integers(0, 10_000))
def test_nms_random_with_ties(n, thr, seed):
    boxes = random_boxes(n, seed, size=20.0).round()  # coarse grid: many equal IoUs
    scores = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(seed)).float()
    assert nms(boxes, scores, thr).tolist() == ref_nms(boxes, scores, thr)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 80), st.floats(0, 1), st.integers(0, 10_000))
def test_compiled_and_numpy_nms_agree(n, thr, seed):
    """Both paths (numba kernel, NumPy fallback) keep the same boxes, ties and empty boxes
    included."""
    from sppnet.ops import boxes as box_ops

    if box_ops._box_kernels is None:
        pytest.skip("numba is not installed")
    b = random_boxes(n, seed, size=20.0).round().double().numpy()
    b[: n // 5, 2] = b[: n // 5, 0]  # some zero-width boxes
    b = np.ascontiguousarray(b)
    np.testing.assert_array_equal(box_ops._box_kernels.nms_sorted(b, thr),
                                  box_ops._nms_sorted_numpy(b, thr))


def test_nms_threshold_is_strictly_greater():
    # IoU of these two is exactly 0.5: kept at threshold 0.5, suppressed below it
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])
    scores = torch.tensor([0.9, 0.8])
    assert box_iou(boxes[:1], boxes[1:]).item() == 0.5
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]


def test_nms_order_and_empty():
    boxes = torch.tensor([[0.0, 0, 1, 1], [10, 10, 11, 11], [20, 20, 21, 21]])
    assert nms(boxes, torch.tensor([0.1, 0.9, 0.5]), 0.3).tolist() == [1, 2, 0]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.3).tolist() == []
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long),
                       0.3).tolist() == []


def test_batched_nms_keeps_classes_apart():
    boxes = random_boxes(120, 3)
    scores = torch.rand(120, generator=torch.Generator().manual_seed(4))
    idxs = torch.randint(0, 4, (120,), generator=torch.Generator().manual_seed(5))
    got = batched_nms(boxes, scores, idxs, 0.3)
    expected = []
    for c in range(4):
        sel = (idxs == c).nonzero().flatten()
        expected += sel[ref_nms(boxes[sel], scores[sel], 0.3)].tolist()
    assert sorted(got.tolist()) == sorted(expected)
    assert torch.all(scores[got][:-1] >= scores[got][1:])  # decreasing score overall


def test_bad_input():
    good = torch.tensor([[0.0, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"boxes must have shape \(R, 4\), got shape \(4,\)"):
        nms(good[0], torch.ones(1), 0.3)
    with pytest.raises(ValueError, match=r"scores must have shape \(1,\) to match boxes"):
        nms(good, torch.ones(2), 0.3)
    with pytest.raises(ValueError, match="iou_threshold must be a number in"):
        nms(good, torch.ones(1), 1.5)
    with pytest.raises(ValueError, match="x2 >= x1 and y2 >= y1"):
        box_iou(torch.tensor([[5.0, 0, 1, 1]]), good)
    with pytest.raises(ValueError, match="scores must be finite"):
        nms(good, torch.tensor([float("nan")]), 0.3)
    with pytest.raises(ValueError, match=r"image_size must be \(H, W\) with H, W >= 1"):
        clip_boxes(good, (0, 10))
    with pytest.raises(ValueError, match=r"idxs must have shape \(1,\)"):
        batched_nms(good, torch.ones(1), torch.zeros(3, dtype=torch.long), 0.3)


def test_box_iou_half_precision_large_boxes():
    # a 300 x 300 box has area 90,000 > float16's 65,504: the area must not overflow to inf
    b = torch.tensor([[0, 0, 300, 300], [0, 0, 300, 150]], dtype=torch.float16)
    iou = box_iou(b, b)
    assert iou.dtype == torch.float16
    assert iou.tolist() == [[1.0, 0.5], [0.5, 1.0]]


def test_box_iou_integer_boxes():
    a = torch.tensor([[0, 0, 10, 10]])
    b = torch.tensor([[0, 0, 10, 5], [20, 20, 30, 30]])
    iou = box_iou(a, b)
    assert iou.dtype == torch.float32
    assert iou.tolist() == [[0.5, 0.0]]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.floats(0, 1), st.integers(0, 10_000))
def test_accelerator_nms_path_matches_the_reference(n, thr, seed):
    """The path taken for boxes on a GPU (IoU matrix where the boxes are, greedy sweep on
    the CPU), run here on CPU tensors: the slow reference's boxes, ties and empty boxes
    included."""
    from sppnet.ops.boxes import _nms_on_device

    boxes = random_boxes(n, seed, size=20.0).round()
    boxes[: n // 5, 2] = boxes[: n // 5, 0]
    scores = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(seed)).float()
    assert _nms_on_device(boxes, scores, thr).tolist() == ref_nms(boxes, scores, thr)


@pytest.mark.cuda
def test_nms_on_cuda_equals_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    boxes, scores = random_boxes(2000, 0), torch.rand(2000)
    labels = torch.randint(0, 20, (2000,))
    want = batched_nms(boxes, scores, labels, 0.3)
    got = batched_nms(boxes.cuda(), scores.cuda(), labels.cuda(), 0.3)
    assert got.device.type == "cuda" and got.cpu().tolist() == want.tolist()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 80), st.integers(1, 6), st.floats(0, 1), st.integers(0, 10_000))
def test_compiled_batched_nms_equals_one_nms_per_category(n, k, thr, seed):
    """All categories in one compiled call keep the same indices in the same order as one NMS
    per category, ties in scores and equal boxes included."""
    from sppnet.ops import boxes as box_ops

    if box_ops._box_kernels is None:
        pytest.skip("numba is not installed")
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(n, seed, size=20.0).round()
    scores = torch.randint(0, 4, (n,), generator=g).float()
    idxs = torch.randint(0, k, (n,), generator=g) * 7 - 3  # any integer labels
    want = box_ops._batched_nms_loop(boxes, scores, idxs, thr)
    assert batched_nms(boxes, scores, idxs, thr).tolist() == want.tolist()
