"""MobileNetV3-Large (Howard et al. 2019) with torchvision's parameter names
(``features.<i>.block.<j>``, ``classifier.{0,3}``), so torchvision's ImageNet state dict loads as
it is; timm's ``mobilenetv3_large_100`` (``conv_stem``, ``bn1``, ``blocks.<s>.<b>``,
``conv_head``, ``classifier``) is mapped onto it.

``forward_features`` stops at stride 16 where the project's MobileNetV2 does (and SSDLite takes
C4): the 672-channel hard-swish output of the *expansion* 1x1 conv of ``features[13]``, the first
stride-32 block, ``(N, 3, H, W) -> (N, 672, H', W')`` with ``H' = ceil(H / 16)`` for the
paddings here (``(k - 1) / 2`` everywhere: 100 -> 7, 130 -> 9). ``feature_stride=32`` ends at
``features[16]`` (960 channels) instead. Cell ``j`` is centred on input pixel ``16 j`` (offset
0.5, walked from the layers; the squeeze-excitation gates see the whole map and are left out of
the receptive field as a global context). With ``num_classes`` the module holds torchvision's
classifier and ``forward`` gives the ImageNet logits.

Batch norm: torchvision's ``eps = 1e-3``; timm trains ``mobilenetv3_large_100`` with
``eps = 1e-5``, so loading a timm-format file sets every BN layer's ``eps`` to ``1e-5``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import FrozenBatchNorm2d, torchvision_init
from .pretrained import IMAGENET_INPUT_SCALE, IMAGENET_MEAN, ImageNetTrunk, load_weights
from .registry import register_model

__all__ = ["Bneck", "InvertedResidual", "MobileNetV3", "SqueezeExcitation", "large_cfg",
           "mobilenet_v3_large"]

TORCHVISION_BN_EPS = 1e-3  # torchvision's MobileNetV3 (momentum 0.01)
TIMM_BN_EPS = 1e-5  # timm's mobilenetv3_large_100 (PyTorch's default)
LAST_CHANNEL = 1280  # the classifier's hidden width
STEM = 16


@dataclass(frozen=True)
class Bneck:
    """One inverted-residual block (torchvision's ``InvertedResidualConfig``)."""

    k: int  # depthwise kernel
    expanded: int  # channels after the 1x1 expansion (= input: no expansion conv)
    out: int
    se: bool  # squeeze-excitation
    act: str  # "RE" (ReLU) or "HS" (hard swish)
    s: int  # depthwise stride


# torchvision's mobilenet_v3_large at width 1.0 (the channels are already multiples of 8)
large_cfg: list[Bneck] = [
    Bneck(3, 16, 16, False, "RE", 1),
    Bneck(3, 64, 24, False, "RE", 2),
    Bneck(3, 72, 24, False, "RE", 1),
    Bneck(5, 72, 40, True, "RE", 2),
    Bneck(5, 120, 40, True, "RE", 1),
    Bneck(5, 120, 40, True, "RE", 1),
    Bneck(3, 240, 80, False, "HS", 2),
    Bneck(3, 200, 80, False, "HS", 1),
    Bneck(3, 184, 80, False, "HS", 1),
    Bneck(3, 184, 80, False, "HS", 1),
    Bneck(3, 480, 112, True, "HS", 1),
    Bneck(3, 672, 112, True, "HS", 1),
    Bneck(5, 672, 160, True, "HS", 2),
    Bneck(5, 960, 160, True, "HS", 1),
    Bneck(5, 960, 160, True, "HS", 1),
]
LAST_CONV = 960  # features[16]: 1x1 conv 160 -> 960


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's / timm's channel rounding: the nearest multiple of ``divisor`` (at least
    ``divisor``), never more than 10% below ``v``."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _act(name: str | None) -> nn.Module | None:
    return {"RE": nn.ReLU(inplace=True), "HS": nn.Hardswish(inplace=True), None: None}[name]


def conv_norm_act(cin: int, cout: int, k: int, s: int, groups: int, act: str | None,
                  norm: type[nn.Module]) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: conv (no bias, padded ``(k - 1) / 2``), BN, act
    (keys ``0``, ``1``)."""
    layers = [nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False),
              norm(cout, eps=TORCHVISION_BN_EPS)]
    a = _act(act)
    return nn.Sequential(*layers, *([a] if a is not None else []))


class SqueezeExcitation(nn.Module):
    """Channel gates from the global average: ``x * hardsigmoid(fc2(relu(fc1(mean(x)))))``,
    ``(N, C, H, W) -> (N, C, H, W)`` (torchvision's keys ``fc1``, ``fc2``)."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def geometry_path(self) -> list[nn.Module]:
        return []  # a per-channel scale (the global context is not part of a cell's field)

    def forward(self, x: Tensor) -> Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale


class InvertedResidual(nn.Module):
    """Expansion 1x1 (if ``expanded != in``), depthwise kxk (strided), squeeze-excitation,
    projection 1x1; the input is added when the stride is 1 and the widths agree.
    ``(N, C_in, H, W) -> (N, C_out, H/s, W/s)``."""

    def __init__(self, cin: int, cfg: Bneck, norm: type[nn.Module]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        self.has_expand = cfg.expanded != cin
        if self.has_expand:
            layers.append(conv_norm_act(cin, cfg.expanded, 1, 1, 1, cfg.act, norm))
        layers.append(conv_norm_act(cfg.expanded, cfg.expanded, cfg.k, cfg.s, cfg.expanded,
                                    cfg.act, norm))
        self.has_se = cfg.se
        if cfg.se:
            layers.append(SqueezeExcitation(cfg.expanded, make_divisible(cfg.expanded // 4)))
        layers.append(conv_norm_act(cfg.expanded, cfg.out, 1, 1, 1, None, norm))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = cfg.s == 1 and cin == cfg.out

    def geometry_path(self) -> list[nn.Module]:
        return [self.block]

    def geometry_shortcut(self) -> list[nn.Module] | None:
        return [] if self.use_res_connect else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNetV3(ImageNetTrunk):
    """torchvision-layout MobileNetV3-Large as an SPP-net trunk.

    Args:
        num_classes: build ``avgpool`` + ``classifier`` (``None``: the trunk alone; a
            checkpoint's ``classifier.*`` — timm's ``conv_head.*`` and ``classifier.*`` — is then
            ignored).
        feature_stride: 16 (expansion of ``features[13]``, 672 ch) or 32 (``features[16]``,
            960 ch).
        frozen_bn: :class:`~sppnet.models.layers.FrozenBatchNorm2d` for the BN layers.
    """

    classifier_prefixes = ("classifier.",)

    def __init__(self, num_classes: int | None = None, feature_stride: int = 16,
                 frozen_bn: bool = False, cfg: list[Bneck] | None = None) -> None:
        super().__init__()
        if feature_stride not in (16, 32):
            raise ValueError(f"feature_stride must be 16 or 32, got {feature_stride}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}")
        cfg = large_cfg if cfg is None else cfg
        self.name = "mobilenet_v3_large"
        norm: type[nn.Module] = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        layers: list[nn.Module] = [conv_norm_act(3, STEM, 3, 2, 1, "HS", norm)]
        ch, stride, split = STEM, 2, None
        for c in cfg:
            if stride == 16 and c.s == 2 and split is None:
                split = len(layers)  # the first stride-32 block: stop after its expansion
            layers.append(InvertedResidual(ch, c, norm))
            ch, stride = c.out, stride * c.s
        layers.append(conv_norm_act(ch, 6 * ch, 1, 1, 1, "HS", norm))
        self.features = nn.Sequential(*layers)
        self.has_classifier = num_classes is not None
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(
                nn.Linear(6 * ch, LAST_CHANNEL), nn.Hardswish(inplace=True),
                nn.Dropout(0.2, inplace=True), nn.Linear(LAST_CHANNEL, num_classes))
        self._init_weights()
        if feature_stride == 16:
            block = self.features[split] if split is not None else None
            if block is None or not block.has_expand or block.use_res_connect:
                raise ValueError("no expanding stride-2 block at stride 16 in this cfg")
            self._split: int | None = split
            channels = cfg[split - 1].expanded
        else:
            self._split, channels = None, 6 * ch
        self._set_geometry(channels)

    def _init_weights(self) -> None:
        torchvision_init(self)  # torchvision's

    def feature_layers(self) -> list[nn.Module]:
        """``features[:13]`` and the expansion of ``features[13]`` (stride 16), or all of
        ``features`` (32); ``forward_features(x)``: ``(N, 3, H, W) -> (N, C, H', W')``."""
        if self._split is None:
            return list(self.features)
        return [*self.features[:self._split], self.features[self._split].block[0]]

    def _rest_layers(self) -> list[nn.Module]:
        if self._split is None:
            return []
        return [*self.features[self._split].block[1:], *self.features[self._split + 1:]]

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits ``(N, num_classes)`` (needs ``num_classes``)."""
        if not self.has_classifier:
            raise self._no_classifier()
        f = self.forward_features(x)
        for m in self._rest_layers():
            f = m(f)
        return self.classifier(self.avgpool(f).flatten(1))

    def convert_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """timm's ``mobilenetv3_large_100`` keys -> torchvision's (and BN ``eps`` -> 1e-5);
        a torchvision state dict is returned as it is."""
        if "conv_stem.weight" not in state:
            return state
        blocks = sorted({(int(m[1]), int(m[2])) for k in state
                         if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))})
        index = {sb: i + 1 for i, sb in enumerate(blocks)}  # timm (stage, block) -> features[i]
        out: dict[str, Tensor] = {}
        for k, v in state.items():
            m = re.match(r"blocks\.(\d+)\.(\d+)\.(.*)", k)
            if m:
                i = index[(int(m[1]), int(m[2]))]
                out[f"features.{i}." + self._timm_block_key(i, m[3])] = v
            elif k.startswith("conv_stem."):
                out["features.0.0." + k[len("conv_stem."):]] = v
            elif k.startswith("bn1."):
                out["features.0.1." + k[len("bn1."):]] = v
            elif k.startswith("conv_head."):
                out["classifier.0." + k[len("conv_head."):]] = v.flatten(1) if v.dim() == 4 else v
            elif k.startswith("classifier."):
                out["classifier.3." + k[len("classifier."):]] = v
            else:
                out[k] = v  # reported as unexpected
        for mod in self.modules():
            if isinstance(mod, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                mod.eps = TIMM_BN_EPS
        return out

    def _timm_block_key(self, i: int, rest: str) -> str:
        """A key inside timm's block ``i`` (``conv_pw.weight``, ``se.conv_reduce.bias``, ...)
        in torchvision's names for ``features[i]``."""
        if i >= len(self.features):
            return rest  # no such block: left as it is, reported as missing / unexpected
        block = self.features[i]
        if not isinstance(block, InvertedResidual):  # timm's final ConvBnAct: conv, bn1
            head, _, tail = rest.partition(".")
            return {"conv": "0", "bn1": "1"}.get(head, "timm." + head) + "." + tail
        e = int(block.has_expand)
        proj = e + 1 + int(block.has_se)
        if block.has_expand:  # timm InvertedResidual
            names = {"conv_pw": "block.0.0", "bn1": "block.0.1", "conv_dw": "block.1.0",
                     "bn2": "block.1.1", "conv_pwl": f"block.{proj}.0", "bn3": f"block.{proj}.1"}
        else:  # timm DepthwiseSeparableConv
            names = {"conv_dw": "block.0.0", "bn1": "block.0.1", "conv_pw": f"block.{proj}.0",
                     "bn2": f"block.{proj}.1"}
        names.update({"se.conv_reduce": f"block.{e + 1}.fc1",
                      "se.conv_expand": f"block.{e + 1}.fc2"})
        for timm_name, tv_name in names.items():
            if rest.startswith(timm_name + "."):
                return tv_name + rest[len(timm_name):]
        return "timm." + rest  # unknown: reported as unexpected


@register_model(mean=IMAGENET_MEAN, input_scale=IMAGENET_INPUT_SCALE)
def mobilenet_v3_large(weights: str | Path | None = None, num_classes: int | None = None,
                       feature_stride: int = 16, frozen_bn: bool = False) -> MobileNetV3:
    """MobileNetV3-Large; ``weights`` = a torchvision or timm (``mobilenetv3_large_100``) state
    dict; see :class:`MobileNetV3`."""
    model = MobileNetV3(num_classes, feature_stride, frozen_bn)
    if weights is not None:
        load_weights(model, weights)
    return model
