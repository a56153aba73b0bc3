"""Top-k accuracy counts."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["topk_correct"]


def topk_correct(scores: Tensor, targets: Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """How many rows of ``scores (Tensor[N, K])`` have their target among the top ``k``, for each
    ``k`` (``k`` larger than ``K`` counts every row)."""
    if scores.dim() != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (N, K) and targets (N,), got {tuple(scores.shape)} and "
                         f"{tuple(targets.shape)}")
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices  # (N, kmax)
    hit = top == targets[:, None]
    return [int(hit[:, :min(k, kmax)].any(1).sum()) for k in ks]

