"""Local response normalisation (Krizhevsky et al. 2012), as in ZF-5 / Convnet* / Overfeat.

``b_c = a_c * D_c ** -beta`` with ``D_c = k + alpha / size * sum_{c' in W(c)} a_{c'}^2`` and the
window ``W(c) = [c - size//2, c + (size-1)//2]`` clipped to the channels: the definition of
``torch.nn.LocalResponseNorm``, which is slow on CPU (a 3-D average pool over a padded copy, and a
backward through it). Here the window sum is a few shifted in-place adds, ``beta = 0.75`` uses
``rsqrt``, and the backward is written out::

    dL/da_j = g_j D_j^-beta - (2 alpha beta / size) a_j sum_{c : j in W(c)} g_c a_c D_c^(-beta-1)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FastLRN", "local_response_norm"]


def _window_sum(t: Tensor, before: int, after: int) -> Tensor:
    """``out[:, c] = sum(t[:, c - before : c + after + 1])`` over channels, clipped."""
    c = t.shape[1]
    out = t.clone()
    for d in range(1, min(before, c - 1) + 1):
        out[:, d:] += t[:, : c - d]
    for d in range(1, min(after, c - 1) + 1):
        out[:, : c - d] += t[:, d:]
    return out


def _inv_pow(d: Tensor, beta: float) -> Tensor:
    return torch.rsqrt(d * torch.sqrt(d)) if beta == 0.75 else d.pow(-beta)


class _LRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
        d = _window_sum(x * x, size // 2, (size - 1) // 2).mul_(alpha / size).add_(k)
        scale = _inv_pow(d, beta)  # D ** -beta
        ctx.save_for_backward(x, d, scale)
        ctx.hp = (size, alpha, beta)
        return x * scale

    @staticmethod
    def backward(ctx, g: Tensor):
        x, d, scale = ctx.saved_tensors
        size, alpha, beta = ctx.hp
        t = g * x * scale / d  # g_c a_c D_c^(-beta-1)
        # transposed window: c with j in W(c) runs over [j - (size-1)//2, j + size//2]
        s = _window_sum(t, (size - 1) // 2, size // 2)
        grad = g * scale - (2.0 * alpha * beta / size) * x * s
        return grad, None, None, None, None


def local_response_norm(x: Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 2.0) -> Tensor:
    """LRN over the channels of ``x (Tensor[N, C, H, W])``; equals ``F.local_response_norm`` up to
    float rounding, forward and backward (``tests/nn/test_lrn.py``)."""
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got shape {tuple(x.shape)}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got size={size}")
    return _LRNFunction.apply(x, int(size), float(alpha), float(beta), float(k))


class FastLRN(nn.Module):
    """Drop-in replacement for ``nn.LocalResponseNorm(size, alpha, beta, k)``, faster on CPU."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                 k: float = 2.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: Tensor) -> Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
