"""Thin ``nn.Module`` wrappers over :mod:`sppnet.ops` (hyper-parameters + ``extra_repr``), the
fast LRN, and fc-layer compression for scoring many windows."""

from .compress import compress_linear, int8_linear, svd_linear
from .pooling import SpatialPyramidPooling, WindowPyramidPooling

__all__ = ["SpatialPyramidPooling", "WindowPyramidPooling", "compress_linear", "int8_linear",
           "svd_linear"]
