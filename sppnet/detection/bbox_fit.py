"""Stage 5: per-class ridge regression of R-CNN's box targets on pool5 (R-CNN appendix C).

Shapes: n training windows of a class, P pool5 dims, K classes.

Windows with IoU >= ``bbox_iou`` with a ground truth of class k regress to it: targets
``(dx, dy, dw, dh)`` by :class:`sppnet.ops.BoxCoder`. Features are pool5 scaled to mean L2 norm
``feat_norm_mean``; targets and features are centred (an unregularised bias), and
``W = argmin |XW - Y|^2 + lambda |W|^2`` is solved in whichever of the primal ``(P x P)`` or dual
``(n x n)`` form is smaller — pool5 is 12,800-d for ZF-5 and 28,800-d for MobileNetV2 at stride 16.
What it fits is a :class:`~sppnet.detection.bbox_reg.BoxRegressor`.
"""

from __future__ import annotations

import numpy as np
import torch

from ..ops import BoxCoder
from .bbox_reg import BoxRegressor

__all__ = ["fit_ridge", "fit_box_regressor"]


def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """``(W (P, T), b (T,))`` minimising ``|(x - mx) W - (y - my)|^2 + lam |W|^2``."""
    x = torch.from_numpy(np.asarray(x, np.float64))
    y = torch.from_numpy(np.asarray(y, np.float64))
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    n, p = xc.shape
    if p <= n:
        a = xc.T @ xc + lam * torch.eye(p, dtype=xc.dtype)
        w = torch.linalg.solve(a, xc.T @ yc)
    else:  # dual: W = X^T (X X^T + lam I)^-1 Y
        a = xc @ xc.T + lam * torch.eye(n, dtype=xc.dtype)
        w = xc.T @ torch.linalg.solve(a, yc)
    b = my - mx @ w
    return w.float().numpy(), b.float().numpy()


def fit_box_regressor(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                      num_classes: int, feat_scale: float, lam: float,
                      max_per_class: int | None = None, seed: int = 0) -> BoxRegressor:
    """Fit from per-image ``(pool5 (n, P), boxes (n, 4), gt boxes (n, 4), labels (n,))``;
    at most ``max_per_class`` windows per class (a seeded random subset) bound the memory
    of the dual solve."""
    coder = BoxCoder()
    p = samples[0][0].shape[1]
    weight = torch.zeros(num_classes, p, 4)
    bias = torch.zeros(num_classes, 4)
    x = np.concatenate([s[0] for s in samples]) * feat_scale
    boxes = torch.from_numpy(np.concatenate([s[1] for s in samples])).float()
    gts = torch.from_numpy(np.concatenate([s[2] for s in samples])).float()
    labels = np.concatenate([s[3] for s in samples])
    targets = coder.encode(gts, boxes).numpy()  # (n, 4)
    rng = np.random.default_rng(seed)
    for k in range(num_classes):
        rows = np.nonzero(labels == k)[0]
        if max_per_class is not None and len(rows) > max_per_class:
            rows = np.sort(rng.choice(rows, max_per_class, replace=False))
        if len(rows) < 2:
            continue  # identity regression (zero deltas)
        w, b = fit_ridge(x[rows], targets[rows], lam)
        weight[k] = torch.from_numpy(w)
        bias[k] = torch.from_numpy(b)
    return BoxRegressor(weight, bias, feat_scale, coder)
