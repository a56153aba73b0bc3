"""The detection head: fc6 -> fc7 -> fc8 over pooled windows (and, when trained end to end,
class-specific box deltas). What a trained detector scores with; the training stages import it,
it imports none of them.

Shapes: B windows, D pooled dims, F fc width, K classes (+1 background).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.spp_nets import fc_activations
from .config import fc_spec

__all__ = ["DetectionHead"]


class DetectionHead(nn.Module):
    """fc6 -> fc7 -> fc8 over pooled window features ``(B, D)``; fc8 has ``K + 1`` outputs
    (index 0 = background). With ``box_deltas`` (end-to-end training) also ``bbox_pred``:
    fc7 -> class-specific box deltas ``(B, K, 4)``, trained on targets normalised by
    ``bbox_mean`` / ``bbox_std`` (buffers; :meth:`deltas` undoes the normalisation)."""

    def __init__(self, in_dim: int, num_classes: int, fc_dim: int = 1024,
                 dropout: float = 0.5, box_deltas: bool = False) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_dim, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.fc8 = nn.Linear(fc_dim, num_classes + 1)
        self.dropout = nn.Dropout(dropout)
        self.in_dim, self.num_classes, self.fc_dim = in_dim, num_classes, fc_dim
        for fc in (self.fc6, self.fc7):
            nn.init.kaiming_normal_(fc.weight, nonlinearity="relu")
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)
        self.box_deltas = box_deltas
        if box_deltas:  # made after fc8, so a head without it draws the same initial weights
            self.bbox_pred = nn.Linear(fc_dim, 4 * num_classes)
            nn.init.normal_(self.bbox_pred.weight, std=0.001)  # Fast R-CNN's initialisation
            nn.init.zeros_(self.bbox_pred.bias)
            self.register_buffer("bbox_mean", torch.zeros(4))
            self.register_buffer("bbox_std", torch.ones(4))

    def features(self, pooled: Tensor, layer: str = "fc7") -> Tensor:
        """``pool5`` (the input itself), ``fc6`` or ``fc7`` activations (after ReLU)."""
        return fc_activations(self, pooled, layer)

    def forward(self, pooled: Tensor) -> Tensor:
        """``(B, D) -> (B, K + 1)`` logits."""
        return self.fc8(self.dropout(self.features(pooled, "fc7")))

    def logits_and_deltas(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, K + 1)`` logits and ``(B, K, 4)`` *normalised* box deltas from one fc pass
        (the training outputs of end-to-end fine-tuning)."""
        if not self.box_deltas:
            raise ValueError("this head has no box-delta layer (it was not trained end to end)")
        h = self.dropout(self.features(pooled, "fc7"))
        return self.fc8(h), self.bbox_pred(h).reshape(-1, self.num_classes, 4)

    def scores_and_deltas(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """Inference: softmax class scores ``(B, K)`` (background left out) and box deltas
        ``(B, K, 4)`` in the box coder's units."""
        logits, deltas = self.logits_and_deltas(pooled)
        return torch.softmax(logits, 1)[:, 1:], deltas * self.bbox_std + self.bbox_mean

    def compressed(self, fc: str) -> DetectionHead:
        """A copy with fc6/fc7 made cheaper: ``fp32`` (as is), ``int8`` or ``svd:R6,R7``
        (truncated SVD to ranks R6 and R7); see :mod:`sppnet.nn.compress`."""
        import copy

        from ..nn.compress import compress_linear

        method, ranks = fc_spec(fc)
        head = copy.deepcopy(self).eval()
        if ranks is not None:
            head.fc6 = compress_linear(self.fc6, "svd", ranks[0])
            head.fc7 = compress_linear(self.fc7, "svd", ranks[1])
        else:
            head.fc6 = compress_linear(self.fc6, method)
            head.fc7 = compress_linear(self.fc7, method)
        return head

    def init_from(self, model: nn.Module) -> bool:
        """Copy fc6/fc7 from a classification net whose pooled size and fc width match."""
        fc6, fc7 = getattr(model, "fc6", None), getattr(model, "fc7", None)
        if (fc6 is None or fc7 is None or fc6.weight.shape != self.fc6.weight.shape
                or fc7.weight.shape != self.fc7.weight.shape):
            return False
        with torch.no_grad():
            for dst, src in ((self.fc6, fc6), (self.fc7, fc7)):
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)
        return True
