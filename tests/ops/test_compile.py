"""The compiled window pooling as torch.library custom ops: opcheck (schema, fake kernel,
autograd registration) and a model using it under torch.compile(fullgraph=True) — no graph
breaks, the same outputs and gradients as eager."""

import pytest
import torch

from sppnet.ops import numba_available, project_boxes, spp_roi_pool

pytestmark = pytest.mark.skipif(not numba_available(), reason="the custom op is the numba path")


def _inputs():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 5, 9, 11, generator=g, dtype=torch.float64)
    boxes = torch.tensor([[0, 0, 60, 50], [10, 20, 170, 140], [30, 5, 31, 6]], dtype=torch.float64)
    cells = project_boxes(boxes, 16, (9, 11))
    return feats, torch.tensor([0, 1, 1]), cells


@pytest.mark.slow
def test_opcheck():
    feats, bidx, cells = _inputs()
    for mode in ("max", "avg"):
        torch.library.opcheck(torch.ops.sppnet.window_pool.default,
                              (feats.requires_grad_(), bidx, cells, [3, 2, 1], mode))


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(4 * 14, 2)

    def forward(self, x, rois):
        return self.fc(spp_roi_pool(self.conv(x), rois, levels=(3, 2, 1), stride=2))


def test_fullgraph_compile_matches_eager():
    torch.manual_seed(0)
    net = _Net()
    x = torch.randn(2, 3, 32, 40)
    rois = torch.tensor([[0, 0, 0, 20, 16], [1, 4, 2, 39, 31], [0, 8, 8, 9, 9]],
                        dtype=torch.float32)
    eager = net(x, rois)
    eager.sum().backward()
    want = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")  # fullgraph: no breaks
    got = compiled(x, rois)
    got.sum().backward()
    torch.testing.assert_close(got, eager, rtol=0, atol=0)
    for g, w in zip([p.grad for p in net.parameters()], want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)
