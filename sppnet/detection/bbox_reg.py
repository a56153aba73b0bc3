"""The trained box regressors as a detector applies them: per-class linear maps of pool5 to
R-CNN's box deltas (R-CNN appendix C), decoded by :class:`sppnet.ops.BoxCoder`. Fitting them is
training (:mod:`.bbox_fit`).

Shapes: R windows, P pool5 dims, K classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..ops import BoxCoder

__all__ = ["BoxRegressor", "decode_per_class"]


def decode_per_class(coder: BoxCoder, deltas: Tensor, boxes: Tensor) -> Tensor:
    """Apply per-class ``deltas (R, K, 4)`` to windows ``boxes (R, 4)`` -> ``(R, K, 4)``."""
    r, k = deltas.shape[:2]
    props = boxes.float()[:, None].expand(r, k, 4).reshape(-1, 4)
    return coder.decode(deltas.reshape(-1, 4), props).reshape(r, k, 4)


@dataclass
class BoxRegressor:
    """Per-class linear regressors ``deltas = (s * pool5) @ W[k] + b[k]``."""

    weight: Tensor  # (K, P, 4)
    bias: Tensor  # (K, 4)
    feat_scale: float
    coder: BoxCoder = BoxCoder()
    # W as one (P, K*4) matrix: all classes in one GEMM (remade whenever the dataclass is,
    # e.g. by dataclasses.replace when the detector moves to another device)
    _flat: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        k, p, _ = self.weight.shape
        self._flat = self.weight.permute(1, 0, 2).reshape(p, k * 4).contiguous()

    @torch.no_grad()
    def deltas(self, pooled: Tensor) -> Tensor:
        """``(R, P)`` pool5 -> ``(R, K, 4)`` predicted ``(dx, dy, dw, dh)``:
        ``(s * pool5) @ W[k] + b[k]`` for every class in one matrix product (``s`` applied to
        the product: no scaled copy of the ``(R, P)`` features)."""
        k = self.weight.shape[0]
        out = torch.addmm(self.bias.reshape(1, k * 4), pooled.to(self._flat.dtype), self._flat,
                          alpha=self.feat_scale)  # (R, K*4)
        return out.reshape(len(pooled), k, 4)

    @torch.no_grad()
    def decode(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Apply ``deltas (R, K, 4)`` to windows ``boxes (R, 4)`` -> ``(R, K, 4)``."""
        return decode_per_class(self.coder, deltas, boxes)

    def predict(self, pooled: Tensor, boxes: Tensor) -> Tensor:
        """Regressed boxes ``(R, K, 4)`` for windows ``boxes (R, 4)`` with pool5 ``(R, P)``."""
        return self.decode(self.deltas(pooled), boxes)

    def state(self) -> dict[str, Tensor]:
        return {"bbox.weight": self.weight, "bbox.bias": self.bias,
                "bbox.feat_scale": torch.tensor(self.feat_scale)}

    @classmethod
    def from_state(cls, t: dict[str, Tensor]) -> BoxRegressor:
        return cls(t["bbox.weight"].float(), t["bbox.bias"].float(),
                   float(t["bbox.feat_scale"]))
