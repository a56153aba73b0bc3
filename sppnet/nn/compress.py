"""Cheaper fc layers for scoring thousands of windows: truncated SVD and int8 weights.

With ~2000 windows per image the fc layers, not the convolutions, set SPP-net's speed on a CPU
(fc6 of ZF-5 is 12,800 x 4,096). Two standard cuts, both approximations (measure the error and
the mAP before keeping one):

- truncated SVD (Fast R-CNN section 3.1): ``W ~ U_r S_r V_r^T``, one ``in -> r`` and one
  ``r -> out`` layer, ``r (in + out)`` instead of ``in * out`` multiply-adds;
- dynamic int8 quantization of the weights (activations quantized per batch).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["svd_linear", "int8_linear", "compress_linear"]


@torch.no_grad()
def svd_linear(linear: nn.Linear, rank: int) -> nn.Sequential:
    """``linear`` as two layers through rank ``rank`` (best rank-r approximation)."""
    out_f, in_f = linear.weight.shape
    if not 1 <= rank <= min(in_f, out_f):
        raise ValueError(f"rank must be in [1, {min(in_f, out_f)}] for a {in_f}->{out_f} layer, "
                         f"got {rank}")
    u, s, vh = torch.linalg.svd(linear.weight.float(), full_matrices=False)
    first = nn.Linear(in_f, rank, bias=False)
    second = nn.Linear(rank, out_f, bias=linear.bias is not None)
    first.weight.copy_((s[:rank, None] * vh[:rank]).float())  # (r, in)
    second.weight.copy_(u[:, :rank].float())  # (out, r)
    if linear.bias is not None:
        second.bias.copy_(linear.bias)
    return nn.Sequential(first, second)


def int8_linear(linear: nn.Linear) -> nn.Module:
    """``linear`` with int8 weights (torch's dynamic quantization, fbgemm on x86 CPUs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8)[0]


def compress_linear(linear: nn.Linear, method: str, rank: int | None = None) -> nn.Module:
    """``method``: ``fp32`` (unchanged), ``int8``, or ``svd`` (needs ``rank``)."""
    if method == "fp32":
        return linear
    if method == "int8":
        return int8_linear(linear)
    if method == "svd":
        if rank is None:
            raise ValueError("svd needs a rank")
        return svd_linear(linear, rank)
    raise ValueError(f"method must be fp32, int8 or svd, got {method!r}")
