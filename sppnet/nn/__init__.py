"""Thin ``nn.Module`` wrappers over :mod:`sppnet.ops` (hyper-parameters + ``extra_repr``)."""

from .pooling import SpatialPyramidPooling, WindowPyramidPooling

__all__ = ["SpatialPyramidPooling", "WindowPyramidPooling"]
