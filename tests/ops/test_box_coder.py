import math

import pytest
import torch

from sppnet.ops import BoxCoder


def test_known_targets():
    coder = BoxCoder()
    proposal = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # centre (20, 40), size 20 x 40
    gt = torch.tensor([[15.0, 20.0, 55.0, 40.0]])  # centre (35, 30), size 40 x 20
    d = coder.encode(gt, proposal)[0].tolist()
    assert d == pytest.approx([15 / 20, -10 / 40, math.log(2.0), math.log(0.5)])


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_round_trip(weights):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=g, dtype=torch.float64) * 500
    wh = 1 + torch.rand(500, 2, generator=g, dtype=torch.float64) * 300
    proposals = torch.cat([xy, xy + wh], 1)
    # ground truths anywhere nearby, sizes within e^{+-3} of the proposal's (inside the clamp)
    gxy = xy + (torch.rand(500, 2, generator=g, dtype=torch.float64) - 0.5) * 400
    gwh = wh * torch.exp((torch.rand(500, 2, generator=g, dtype=torch.float64) - 0.5) * 6)
    gts = torch.cat([gxy, gxy + gwh], 1)
    coder = BoxCoder(weights)
    deltas = coder.encode(gts, proposals)
    torch.testing.assert_close(coder.decode(deltas, proposals), gts)
    torch.testing.assert_close(coder.encode(coder.decode(deltas, proposals), proposals), deltas)


def test_decode_per_class_groups_and_clamp():
    coder = BoxCoder()
    proposals = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.1, 0.0, 100.0, 0.0]])  # two classes
    out = coder.decode(deltas, proposals)
    assert out.shape == (1, 8)
    assert out[0, :4].tolist() == [0.0, 0.0, 10.0, 10.0]
    assert torch.isfinite(out).all()  # dw = 100 is clamped, exp() does not overflow
    assert out[0, 6] - out[0, 4] == pytest.approx(10 * 1000 / 16, rel=1e-5)


def test_errors():
    coder = BoxCoder()
    with pytest.raises(ValueError, match="proposals must have positive width and height"):
        coder.encode(torch.tensor([[0.0, 0, 5, 5]]), torch.tensor([[0.0, 0, 0, 5]]))
    with pytest.raises(ValueError, match="same shape"):
        coder.encode(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"deltas must have shape \(1, 4k\)"):
        coder.decode(torch.zeros(1, 5), torch.tensor([[0.0, 0, 5, 5]]))
    with pytest.raises(ValueError, match="weights must be 4 positive numbers"):
        BoxCoder((1.0, 0.0, 1.0, 1.0))
