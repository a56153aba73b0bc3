"""VGG-16 and VGG-16-BN (Simonyan & Zisserman 2015) with torchvision's parameter names
(``features.<i>``, ``classifier.{0,3,6}``), so a torchvision or timm ImageNet state dict loads.

``forward_features`` is the SPP-net map at stride 16, as in the paper's detection with a deeper
net: ``conv5_3`` + ReLU without the last max pool, 512 channels,
``(N, 3, H, W) -> (N, 512, floor(H/16), floor(W/16))``; ``feature_stride=32`` adds ``pool5``.
Geometry (walked from the layers): 3x3 convs padded 1 keep the centre, each 2x2 pool moves it by
half a cell, so cell ``j`` is centred at ``16 j + 8`` (offset 8.0) and needs inputs of at least
16 px. With ``num_classes`` the module also holds torchvision's ``avgpool`` (7x7) and
``classifier`` and ``forward`` gives the ImageNet logits.

timm's ``vgg16`` / ``vgg16_bn`` have the same ``features``; their classifier is
``pre_logits.fc1`` (a 7x7 conv), ``pre_logits.fc2`` (1x1 conv) and ``head.fc``, mapped here to
``classifier.0/3/6`` (the conv kernels flattened in torchvision's ``(C, 7, 7)`` order).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from .layers import FrozenBatchNorm2d, torchvision_init
from .pretrained import IMAGENET_INPUT_SCALE, IMAGENET_MEAN, ImageNetTrunk, load_weights
from .registry import register_model

__all__ = ["VGG", "vgg_cfgs", "vgg16", "vgg16_bn"]

# torchvision's configuration "D": conv widths, "M" = 2x2 max pool
vgg_cfgs: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
}
FC_DIM = 4096
POOL_SIDE = 7  # torchvision's adaptive avgpool before fc6


class VGG(ImageNetTrunk):
    """A torchvision-layout VGG as an SPP-net trunk.

    Args:
        cfg: conv widths and ``"M"`` pools (a value of :data:`vgg_cfgs`).
        batch_norm: conv -> BN -> ReLU (``vgg16_bn``) instead of conv -> ReLU.
        num_classes: build ``avgpool`` + ``classifier`` (``None``: the trunk alone; a
            checkpoint's ``classifier.*`` / ``pre_logits.*`` / ``head.*`` is then ignored).
        feature_stride: 16 (``conv5_3`` + ReLU) or 32 (after ``pool5``).
        frozen_bn: :class:`~sppnet.models.layers.FrozenBatchNorm2d` for the BN layers.
        name: the registry name.
    """

    classifier_prefixes = ("classifier.",)

    def __init__(self, cfg: list[int | str], batch_norm: bool = False,
                 num_classes: int | None = None, feature_stride: int = 16,
                 frozen_bn: bool = False, name: str = "vgg16") -> None:
        super().__init__()
        if feature_stride not in (16, 32):
            raise ValueError(f"feature_stride must be 16 or 32, got {feature_stride}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}")
        if cfg[-1] != "M":
            raise ValueError("a VGG configuration ends with its pool5 ('M')")
        self.name = name
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        layers: list[nn.Module] = []
        ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(ch, int(v), 3, padding=1))
            if batch_norm:
                layers.append(norm(int(v)))
            layers.append(nn.ReLU(inplace=True))
            ch = int(v)
        self.features = nn.Sequential(*layers)
        self.has_classifier = num_classes is not None
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(POOL_SIDE)
            self.classifier = nn.Sequential(
                nn.Linear(ch * POOL_SIDE * POOL_SIDE, FC_DIM), nn.ReLU(True), nn.Dropout(0.5),
                nn.Linear(FC_DIM, FC_DIM), nn.ReLU(True), nn.Dropout(0.5),
                nn.Linear(FC_DIM, num_classes))
        self._init_weights()
        # stride 16: everything but pool5
        self._trunk_len = len(self.features) - (1 if feature_stride == 16 else 0)
        self._set_geometry(ch)

    def _init_weights(self) -> None:
        torchvision_init(self)  # torchvision's

    def convert_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """timm's ``pre_logits.fc1/fc2`` (conv) and ``head.fc`` -> ``classifier.0/3/6``."""
        names = {"pre_logits.fc1.": "classifier.0.", "pre_logits.fc2.": "classifier.3.",
                 "head.fc.": "classifier.6."}
        out = {}
        for k, v in state.items():
            prefix = next((p for p in names if k.startswith(p)), None)
            if prefix is None:
                out[k] = v
                continue
            new = names[prefix] + k[len(prefix):]
            out[new] = v.flatten(1) if new.endswith("weight") and v.dim() == 4 else v
        return out

    def feature_layers(self) -> list[nn.Module]:
        """``features`` up to ``conv5_3`` + ReLU (stride 16) or ``pool5`` (32);
        ``forward_features(x)``: ``(N, 3, H, W) -> (N, 512, H', W')``."""
        return [self.features[i] for i in range(self._trunk_len)]

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits ``(N, num_classes)`` (needs ``num_classes``; inputs >= 32 px)."""
        if not self.has_classifier:
            raise self._no_classifier()
        f = self.forward_features(x)
        if self.feature_stride == 16:
            f = self.features[-1](f)
        return self.classifier(self.avgpool(f).flatten(1))


def _register(name: str, batch_norm: bool):
    def builder(weights: str | Path | None = None, num_classes: int | None = None,
                feature_stride: int = 16, frozen_bn: bool = False) -> VGG:
        model = VGG(vgg_cfgs["vgg16"], batch_norm, num_classes, feature_stride, frozen_bn, name)
        if weights is not None:
            load_weights(model, weights)
        return model

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"VGG-16{' with batch norm' if batch_norm else ''}; ``weights`` = a "
                       "torchvision or timm state dict; see :class:`VGG`.")
    return register_model(builder, mean=IMAGENET_MEAN, input_scale=IMAGENET_INPUT_SCALE)


vgg16 = _register("vgg16", batch_norm=False)
vgg16_bn = _register("vgg16_bn", batch_norm=True)
