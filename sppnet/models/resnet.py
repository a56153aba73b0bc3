"""ResNet-18/34/50/101 (He et al. 2016; torchvision's v1.5: stride on the 3x3 conv) with
torchvision's parameter names, so a torchvision or timm ImageNet state dict loads as it is.

``forward_features`` is the SPP-net map at stride 16: ``conv1 .. layer3`` (256 channels for
ResNet-18/34, 1024 for 50/101), ``(N, 3, H, W) -> (N, C, ceil(H/16), ceil(W/16))`` (every
strided layer takes ``n`` to ``ceil(n/2)``: 100 -> 7, 130 -> 9). ``layer4`` stays in the module
(its weights are part of every checkpoint): :meth:`ResNet.forward_layer4` takes the stride-16 map
to stride 32, and ``feature_stride=32`` makes ``forward_features`` end there instead. With
``num_classes`` the module also holds ``fc`` and ``forward`` gives the ImageNet logits.

Geometry (derived by :func:`~sppnet.models.layers.walk_geometry`): every conv and pool is padded
``(k - 1) / 2``, so cell ``j`` is centred on input pixel ``16 j`` (offset 0.5).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from .layers import FrozenBatchNorm2d, torchvision_init
from .pretrained import IMAGENET_INPUT_SCALE, IMAGENET_MEAN, ImageNetTrunk, load_weights
from .registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet_cfgs", "resnet18", "resnet34",
           "resnet50", "resnet101"]

NormLayer = type[nn.BatchNorm2d] | type[FrozenBatchNorm2d]


class BasicBlock(nn.Module):
    """Two 3x3 convs (the first strided) + shortcut; ``(N, C_in, H, W) -> (N, C, H/s, W/s)``."""

    expansion = 1

    def __init__(self, in_ch: int, ch: int, stride: int, norm: NormLayer) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 3, stride, 1, bias=False)
        self.bn1 = norm(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1, bias=False)
        self.bn2 = norm(ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_ch, ch * self.expansion, stride, norm)

    def geometry_path(self) -> list[nn.Module]:
        return [self.conv1, self.conv2]

    def geometry_shortcut(self) -> list[nn.Module]:
        return [self.downsample] if self.downsample is not None else []

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4) + shortcut;
    ``(N, C_in, H, W) -> (N, 4 ch, H/s, W/s)``."""

    expansion = 4

    def __init__(self, in_ch: int, ch: int, stride: int, norm: NormLayer) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 1, bias=False)
        self.bn1 = norm(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, stride, 1, bias=False)
        self.bn2 = norm(ch)
        self.conv3 = nn.Conv2d(ch, ch * self.expansion, 1, bias=False)
        self.bn3 = norm(ch * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_ch, ch * self.expansion, stride, norm)

    def geometry_path(self) -> list[nn.Module]:
        return [self.conv1, self.conv2, self.conv3]

    def geometry_shortcut(self) -> list[nn.Module]:
        return [self.downsample] if self.downsample is not None else []

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(in_ch: int, out_ch: int, stride: int, norm: NormLayer) -> nn.Sequential | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), norm(out_ch))


Block = type[BasicBlock] | type[Bottleneck]

# blocks per stage (torchvision's resnet.py): layer1..layer4 at 64, 128, 256, 512 channels
resnet_cfgs: dict[str, tuple[Block, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)


class ResNet(ImageNetTrunk):
    """A torchvision-layout ResNet as an SPP-net trunk.

    Args:
        name: a key of :data:`resnet_cfgs`.
        num_classes: build ``avgpool`` + ``fc`` with this many outputs (``None``: the trunk
            alone; a checkpoint's ``fc.*`` is then ignored).
        feature_stride: 16 (``layer3``, the detection map) or 32 (``layer4``).
        frozen_bn: :class:`~sppnet.models.layers.FrozenBatchNorm2d` instead of
            ``nn.BatchNorm2d`` (same keys; ImageNet statistics fixed for fine-tuning).
    """

    classifier_prefixes = ("fc.",)

    def __init__(self, name: str, num_classes: int | None = None, feature_stride: int = 16,
                 frozen_bn: bool = False) -> None:
        super().__init__()
        if name not in resnet_cfgs:
            raise ValueError(f"unknown ResNet {name!r}; known: {', '.join(resnet_cfgs)}")
        if feature_stride not in (16, 32):
            raise ValueError(f"feature_stride must be 16 or 32, got {feature_stride}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}")
        block, counts = resnet_cfgs[name]
        norm: NormLayer = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        self.name = name
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = 64
        for i, (width, n) in enumerate(zip(STAGE_WIDTHS, counts)):
            blocks = []
            for b in range(n):
                blocks.append(block(in_ch, width, 2 if (b == 0 and i > 0) else 1, norm))
                in_ch = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.has_classifier = num_classes is not None
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights()
        self._stages = 3 if feature_stride == 16 else 4
        self._set_geometry(in_ch // 2 if feature_stride == 16 else in_ch)

    def _init_weights(self) -> None:
        torchvision_init(self, linears=False)  # torchvision's

    def feature_layers(self) -> list[nn.Module]:
        """``conv1, bn1, relu, maxpool, layer1 .. layer3`` (stride 16) or ``.. layer4`` (32);
        ``forward_features(x)``: ``(N, 3, H, W) -> (N, C, H', W')``."""
        return [self.conv1, self.bn1, self.relu, self.maxpool,
                *(getattr(self, f"layer{i + 1}") for i in range(self._stages))]

    def forward_layer4(self, feats: Tensor) -> Tensor:
        """The stride-16 map ``(N, C, H', W')`` -> ``layer4``'s ``(N, 2C, H'/2, W'/2)``."""
        return self.layer4(feats)

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits ``(N, num_classes)`` (needs ``num_classes``)."""
        if not self.has_classifier:
            raise self._no_classifier()
        f = self.forward_features(x)
        if self.feature_stride == 16:
            f = self.layer4(f)
        return self.fc(self.avgpool(f).flatten(1))


def _register(name: str):
    def builder(weights: str | Path | None = None, num_classes: int | None = None,
                feature_stride: int = 16, frozen_bn: bool = False) -> ResNet:
        model = ResNet(name, num_classes, feature_stride, frozen_bn)
        if weights is not None:
            load_weights(model, weights)
        return model

    block, counts = resnet_cfgs[name]
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"{name}: {block.__name__} x {counts}; ``weights`` = a torchvision or "
                       "timm state dict (.pth/.pt/.safetensors); see :class:`ResNet`.")
    return register_model(builder, mean=IMAGENET_MEAN, input_scale=IMAGENET_INPUT_SCALE)


resnet18 = _register("resnet18")
resnet34 = _register("resnet34")
resnet50 = _register("resnet50")
resnet101 = _register("resnet101")
