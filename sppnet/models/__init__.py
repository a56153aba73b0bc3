"""The paper's networks (ZF-5, Convnet*-5, Overfeat-5/7, each with and without SPP), the TFLite
MobileNetV2, the ImageNet trunks that load torchvision / timm checkpoints (ResNet-18/34/50/101,
VGG-16(-BN), MobileNetV3-Large) and a registry. Nothing here knows about datasets."""

from . import mobilenet_v2 as _mobilenet_v2  # noqa: F401  (registers mobilenet_v2)
from . import mobilenet_v3 as _mobilenet_v3  # noqa: F401  (registers mobilenet_v3_large)
from . import resnet as _resnet  # noqa: F401  (registers resnet18/34/50/101)
from . import vgg as _vgg  # noqa: F401  (registers vgg16, vgg16_bn)
from .backbone import BackboneSpec, backbone_spec, load_backbone, load_model
from .layers import FrozenBatchNorm2d, freeze_batchnorm
from .pretrained import IMAGENET_INPUT_SCALE, IMAGENET_MEAN, load_weights, read_state_dict
from .registry import get_model, input_normalisation, list_models, register_model
from .spp_nets import SPPNet, cfgs, geometry, map_size

__all__ = ["BackboneSpec", "backbone_spec", "load_backbone", "load_model", "SPPNet", "cfgs",
           "geometry", "get_model", "list_models", "map_size", "register_model",
           "input_normalisation", "FrozenBatchNorm2d", "freeze_batchnorm", "IMAGENET_MEAN",
           "IMAGENET_INPUT_SCALE", "load_weights", "read_state_dict"]
