import pytest
import torch

from sppnet.nn.compress import compress_linear, int8_linear, svd_linear


def test_svd_at_full_rank_is_exact_and_lower_ranks_are_the_best_approximation():
    torch.manual_seed(0)
    lin = torch.nn.Linear(40, 24)
    x = torch.randn(8, 40)
    with torch.no_grad():
        torch.testing.assert_close(svd_linear(lin, 24)(x), lin(x), atol=1e-5, rtol=1e-5)
        # a rank-r weight is reproduced exactly at rank r
        u, v = torch.randn(24, 3), torch.randn(3, 40)
        lin.weight.copy_(u @ v)
        torch.testing.assert_close(svd_linear(lin, 3)(x), lin(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="rank must be in"):
        svd_linear(lin, 25)


def test_int8_is_close_and_methods_are_checked():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64)
    x = torch.randn(16, 256)
    with torch.no_grad():
        ref = lin(x)
        err = (int8_linear(lin)(x) - ref).abs().max() / ref.abs().max()
    assert err < 0.05
    assert compress_linear(lin, "fp32") is lin
    with pytest.raises(ValueError, match="fp32, int8 or svd"):
        compress_linear(lin, "fp8")
