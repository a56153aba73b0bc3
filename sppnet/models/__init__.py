"""The paper's networks (ZF-5, Convnet*-5, Overfeat-5/7, each with and without SPP) and a
registry. Nothing here knows about datasets."""

from . import mobilenet_v2 as _mobilenet_v2  # noqa: F401  (registers mobilenet_v2)
from .backbone import BackboneSpec, backbone_spec, load_backbone, load_model
from .registry import get_model, list_models, register_model
from .spp_nets import SPPNet, cfgs, geometry, map_size

__all__ = ["BackboneSpec", "backbone_spec", "load_backbone", "load_model", "SPPNet", "cfgs",
           "geometry", "get_model", "list_models", "map_size", "register_model"]
