import pytest
import torch
from torch import nn

from sppnet.nn.lrn import FastLRN


@pytest.mark.parametrize("size,alpha,beta,k", [(5, 1e-4, 0.75, 2.0), (5, 1e-2, 0.75, 1.0),
                                               (4, 1e-2, 0.6, 1.0), (3, 5e-3, 0.75, 2.0),
                                               (1, 1e-2, 0.5, 1.0)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_torch_lrn_forward_and_backward(size, alpha, beta, k, channels_last):
    torch.manual_seed(size)
    x = torch.randn(2, 11, 6, 5, dtype=torch.float64) * 10
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref, ours = nn.LocalResponseNorm(size, alpha, beta, k), FastLRN(size, alpha, beta, k)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref(xa), ours(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ya)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-10, atol=1e-12)


def test_float32_relative_error_and_gradcheck():
    x = torch.randn(4, 96, 20, 20) * 30
    ref = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x)
    rel = ((FastLRN()(x) - ref).abs() / ref.abs().clamp(min=1e-6)).max()
    assert rel < 1e-5
    xd = torch.randn(1, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(FastLRN(5, 1e-1, 0.75, 1.0), (xd,))


def test_repr_and_errors():
    assert "size=5" in repr(FastLRN())
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, H, W\)"):
        FastLRN()(torch.randn(3, 4))
