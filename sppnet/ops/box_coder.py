"""R-CNN's bounding-box regression targets ``(dx, dy, dw, dh)`` as one reversible coder.

For a proposal ``P`` and a ground truth ``G`` (centres ``x, y``, sizes ``w, h``; continuous
coordinates, ``w = x2 - x1``)::

    dx = wx * (Gx - Px) / Pw      dw = ww * log(Gw / Pw)
    dy = wy * (Gy - Py) / Ph      dh = wh * log(Gh / Ph)

``decode(encode(G, P), P) == G`` up to float rounding (Girshick et al., R-CNN, appendix C).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._checks import check_boxes, values_checkable

__all__ = ["BoxCoder"]

# decode clamps dw, dh here so that exp() cannot overflow (torchvision / detectron2 use the same)
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode ground-truth boxes relative to proposals, and decode deltas back to boxes.

    Args:
        weights: ``(wx, wy, ww, wh)`` multipliers of the targets. R-CNN and SPP-net:
            ``(1, 1, 1, 1)``; Fast R-CNN normalises with ``(10, 10, 5, 5)``.
        scale_clamp: upper bound on ``dw, dh`` (after dividing by the weights) in ``decode``.
    """

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 scale_clamp: float = DEFAULT_SCALE_CLAMP) -> None:
        weights = tuple(float(v) for v in weights)
        if len(weights) != 4 or not all(math.isfinite(v) and v > 0 for v in weights):
            raise ValueError(f"weights must be 4 positive numbers (wx, wy, ww, wh), got {weights}")
        self.weights = weights
        self.scale_clamp = float(scale_clamp)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, scale_clamp={self.scale_clamp:.4f})"

    @staticmethod
    def _centre_size(boxes: Tensor, name: str, op: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        if values_checkable() and boxes.numel() and bool(((w <= 0) | (h <= 0)).any()):
            r = int(((w <= 0) | (h <= 0)).nonzero()[0, 0])
            raise ValueError(f"{name} must have positive width and height to {op}, got row {r}: "
                             f"{boxes[r].tolist()}")
        return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h

    def encode(self, gt_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Targets that turn ``proposals (Tensor[R, 4])`` into ``gt_boxes (Tensor[R, 4])``.

        Returns:
            Tensor[R, 4]: ``(dx, dy, dw, dh)`` per row.
        """
        check_boxes(gt_boxes, "gt_boxes")
        check_boxes(proposals, "proposals")
        if gt_boxes.shape != proposals.shape:
            raise ValueError(f"gt_boxes and proposals must have the same shape, got "
                             f"{tuple(gt_boxes.shape)} and {tuple(proposals.shape)}")
        px, py, pw, ph = self._centre_size(proposals, "proposals", "encode")
        gx, gy, gw, gh = self._centre_size(gt_boxes, "gt_boxes", "encode")
        wx, wy, ww, wh = self.weights
        return torch.stack([wx * (gx - px) / pw, wy * (gy - py) / ph,
                            ww * torch.log(gw / pw), wh * torch.log(gh / ph)], 1)

    def decode(self, deltas: Tensor, proposals: Tensor) -> Tensor:
        """Apply ``deltas (Tensor[R, 4k])`` to ``proposals (Tensor[R, 4])``.

        ``k`` groups of 4 (one per class) are decoded against the same proposal.

        Returns:
            Tensor[R, 4k]: ``xyxy`` boxes.
        """
        check_boxes(proposals, "proposals")
        if not isinstance(deltas, Tensor) or deltas.dim() != 2 or deltas.shape[1] % 4 or (
                deltas.shape[0] != proposals.shape[0]):
            shape = tuple(deltas.shape) if isinstance(deltas, Tensor) else type(deltas).__name__
            raise ValueError(f"deltas must have shape ({proposals.shape[0]}, 4k), got {shape}")
        px, py, pw, ph = self._centre_size(proposals, "proposals", "decode")
        wx, wy, ww, wh = self.weights
        d = deltas.to(proposals.dtype).reshape(deltas.shape[0], -1, 4)  # (R, k, 4)
        dx, dy = d[..., 0] / wx, d[..., 1] / wy
        dw = (d[..., 2] / ww).clamp(max=self.scale_clamp)
        dh = (d[..., 3] / wh).clamp(max=self.scale_clamp)
        cx = dx * pw[:, None] + px[:, None]
        cy = dy * ph[:, None] + py[:, None]
        w = torch.exp(dw) * pw[:, None]
        h = torch.exp(dh) * ph[:, None]
        boxes = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)
        return boxes.reshape(deltas.shape[0], -1)
