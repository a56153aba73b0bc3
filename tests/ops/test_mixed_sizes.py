"""Batches of different-size maps (issue 14.1): pooling each map's valid region of a zero-padded
batch equals spp_pool of the unpadded map, values and gradients; and boxes the torchvision way
(one (L, 4) tensor per image) pool as the (R, 5) rows they stand for."""

import pytest
import torch

from sppnet.nn import SpatialPyramidPooling
from sppnet.ops import boxes_to_rois, numba_available, spp_pool, spp_roi_pool

BACKENDS = ["torch"] + (["numba"] if numba_available() else [])
SIZES = [(9, 13), (4, 5), (13, 7), (1, 1)]


def padded(maps):
    h = max(m.shape[-2] for m in maps)
    w = max(m.shape[-1] for m in maps)
    # padding with a large value: any leak of the padded cells into the result would show
    out = torch.full((len(maps), maps[0].shape[0], h, w), 1e3, dtype=maps[0].dtype)
    for i, m in enumerate(maps):
        out[i, :, :m.shape[-2], :m.shape[-1]] = m
    return out


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_padded_batch_equals_each_map_alone_with_gradients(mode):
    torch.manual_seed(0)
    maps = [torch.randn(3, h, w, dtype=torch.float64) for h, w in SIZES]
    g = torch.randn(len(maps), 3 * 50, dtype=torch.float64)
    alone = [m.clone().requires_grad_() for m in maps]
    want = torch.cat([spp_pool(m[None], (6, 3, 2, 1), mode) for m in alone])
    (want * g).sum().backward()
    batch = padded(maps).requires_grad_()
    got = spp_pool(batch, (6, 3, 2, 1), mode, image_sizes=SIZES)
    torch.testing.assert_close(got, want)
    (got * g).sum().backward()
    for i, (h, w) in enumerate(SIZES):
        torch.testing.assert_close(batch.grad[i, :, :h, :w], alone[i].grad)
        assert batch.grad[i].abs().sum() == pytest.approx(alone[i].grad.abs().sum().item())
    module = SpatialPyramidPooling((6, 3, 2, 1), mode)
    torch.testing.assert_close(module(batch, torch.tensor(SIZES)), want)


def test_gradcheck_on_a_padded_batch():
    torch.manual_seed(1)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: spp_pool(t, (3, 2, 1), "max", image_sizes=[(6, 4), (3, 7)]), (x,))


def test_sizes_outside_the_maps_are_refused():
    x = torch.zeros(2, 1, 5, 5)
    with pytest.raises(ValueError, match=r"image_sizes\[1\] = \(6, 2\) is not a region"):
        spp_pool(x, (1,), image_sizes=[(5, 5), (6, 2)])
    with pytest.raises(ValueError, match="one \\(h, w\\) per map"):
        spp_pool(x, (1,), image_sizes=[(5, 5)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_boxes_as_a_list_per_image_equal_the_rows_form(backend):
    torch.manual_seed(2)
    feats = torch.randn(2, 4, 10, 12)
    b0 = torch.tensor([[0.0, 0.0, 100.0, 80.0], [20.0, 30.0, 60.0, 150.0]])
    b1 = torch.tensor([[5.0, 5.0, 190.0, 150.0]])
    rows = torch.tensor([[0, 0.0, 0.0, 100.0, 80.0], [0, 20.0, 30.0, 60.0, 150.0],
                         [1, 5.0, 5.0, 190.0, 150.0]])
    torch.testing.assert_close(boxes_to_rois([b0, b1]), rows)
    torch.testing.assert_close(spp_roi_pool(feats, [b0, b1], (3, 1), backend=backend),
                               spp_roi_pool(feats, rows, (3, 1), backend=backend))
    with pytest.raises(ValueError, match="one \\(L, 4\\) tensor per image: got 1 for 2"):
        spp_roi_pool(feats, [b0])
