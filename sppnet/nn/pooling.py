"""Spatial pyramid pooling layers.

These are He et al.'s SPP-net layers (ECCV 2014, arXiv 1406.4729): max pooling of a conv map into
``n x n`` bins for every pyramid level, concatenated into a fixed-length vector for the fc layers,
whatever the input size. They are **not** the YOLO "SPP" / "SPPF" blocks of the same name, which
concatenate same-size max-pooled maps (stride 1) and keep the spatial layout.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..ops import spp_output_dim, spp_pool, spp_roi_pool
from ..ops._checks import check_levels, check_mode, check_stride

__all__ = ["SpatialPyramidPooling", "WindowPyramidPooling"]


class SpatialPyramidPooling(nn.Module):
    """SPP-net's pyramid pooling of whole maps: ``(N, C, H, W) -> (N, C * sum(n*n))``.

    Args:
        levels: pyramid levels (paper: ``(6, 3, 2, 1)``, 50 bins; control ``(4, 3, 2, 1)``).
        mode: ``"max"`` (paper) or ``"avg"``.

    Exports to ONNX with dynamic ``H, W`` (one graph serves every input size).
    """

    def __init__(self, levels: Sequence[int] = (6, 3, 2, 1), mode: str = "max") -> None:
        super().__init__()
        self.levels = check_levels(levels)
        self.mode = check_mode(mode)

    def output_dim(self, in_channels: int) -> int:
        """Length of the output vector for ``in_channels`` input channels."""
        return spp_output_dim(in_channels, self.levels)

    @property
    def num_bins(self) -> int:
        return sum(n * n for n in self.levels)

    def forward(self, x: Tensor, image_sizes: Tensor | None = None) -> Tensor:
        """``image_sizes (N, 2)``: the valid ``(h, w)`` of each map of a zero-padded batch of
        different sizes (see :func:`~sppnet.ops.spp_pool`)."""
        return spp_pool(x, self.levels, self.mode, image_sizes)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, mode={self.mode!r}, bins={self.num_bins}"


class WindowPyramidPooling(nn.Module):
    """SPP-net detection pooling: image windows of conv maps computed once per image.

    ``forward(features (N, C, H, W), rois (R, 5)) -> (R, C * sum(n*n))`` with rois rows
    ``(batch_index, x1, y1, x2, y2)`` in image pixels, projected with ``stride``/``offset``.
    """

    def __init__(self, levels: Sequence[int] = (6, 3, 2, 1), stride: float = 16,
                 offset: float = 0.0, mode: str = "max", backend: str = "auto") -> None:
        super().__init__()
        self.levels = check_levels(levels)
        self.stride, self.offset = check_stride(stride, offset)
        self.mode = check_mode(mode)
        self.backend = backend

    def output_dim(self, in_channels: int) -> int:
        return spp_output_dim(in_channels, self.levels)

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        return spp_roi_pool(features, rois, self.levels, self.stride, self.offset, self.mode,
                            self.backend)

    def extra_repr(self) -> str:
        return (f"levels={self.levels}, stride={self.stride:g}, offset={self.offset:g}, "
                f"mode={self.mode!r}")
