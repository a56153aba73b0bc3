"""MobileNetV2 (width 1.0) with ImageNet weights read from a TFLite file — the one
ImageNet-pretrained backbone available offline here.

The TFLite graph (batch-norm folded into uint8 conv weights, ReLU6 fused, residual ADDs) is executed
op by op in float with the dequantized weights, with TensorFlow's "SAME" padding. Inputs are
``(pixel - 128) / 128`` (the file's input quantization), i.e. ``to_tensor(img, 128, 1/128)``.

``forward_features`` stops at stride 16 (the 576-channel expansion output of the first stride-32
block, 14x14 at 224 input — the layer SSDLite-MobileNetV2 takes) or 32 (the final 1x1 conv, 1280
channels) and reports ``feature_stride`` / ``feature_offset`` so that SPP heads
and window pooling work on it as on ZF-5. The image is padded at the bottom and right to a multiple
of the stride first, so the geometry is exact for any image size (TF "SAME" padding would otherwise
move by half a pixel with the parity of the size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import SpatialPyramidPooling
from .registry import register_model
from .spp_nets import PooledHeadNet
from .tflite_import import TFLiteError, TFLiteGraph, TFLiteOp, conv_weight, read_tflite

__all__ = ["MobileNetV2TFLite", "MobileNetV2Classifier", "mobilenet_v2", "same_padding",
           "MOBILENET_HEADS"]

SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "RESHAPE", "SOFTMAX")


def same_padding(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow "SAME": output ``ceil(size / s)``; the extra pixel of an odd total goes after."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class _TFConv(nn.Module):
    """A TFLite CONV_2D / DEPTHWISE_CONV_2D: SAME/VALID padding, fused ReLU/ReLU6."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, stride: tuple[int, int],
                 padding: str, groups: int, activation: str | None) -> None:
        super().__init__()
        out_c, in_per_group, kh, kw = weight.shape
        # SAME at stride 1 with an odd kernel pads (k - 1) / 2 on every side whatever the size:
        # that goes into the conv itself (one op instead of pad + conv; the same values)
        inner = (padding == "SAME" and tuple(stride) == (1, 1) and kh % 2 == 1 and kw % 2 == 1)
        self.conv = nn.Conv2d(in_per_group * groups, out_c, (kh, kw), stride, groups=groups,
                              padding=((kh - 1) // 2, (kw - 1) // 2) if inner else 0)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(weight))
            self.conv.bias.copy_(torch.from_numpy(bias))
        self.same = padding == "SAME" and not inner
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if self.same:
            (kh, kw), (sh, sw) = self.conv.kernel_size, self.conv.stride
            top, bottom = same_padding(x.shape[-2], kh, sh)
            left, right = same_padding(x.shape[-1], kw, sw)
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return _activate(self.conv(x), self.activation)


def _activate(x: Tensor, activation: str | None) -> Tensor:
    if activation == "relu6":
        return F.relu6(x)
    if activation == "relu":
        return F.relu(x)
    return x


# MobileNetV2's graph (Sandler et al. 2018, Table 2): 17 bottleneck blocks, each with one
# depthwise conv; 10 of them add their input back (stride 1, same width). MobileNetV1 has 13
# depthwise convs and no residual ADD.
V2_DEPTHWISE, V2_RESIDUAL_ADDS = 17, 10


def check_mobilenet_v2(graph: TFLiteGraph) -> None:
    """Refuse a TFLite classifier that is not a MobileNetV2 (a MobileNetV1, say): its layers
    would be read as V2's without a word, and V2's settings (39 frozen convs, stride-16 map)
    would mean something else."""
    kinds = [op.kind for op in graph.ops]
    dw, adds = kinds.count("DEPTHWISE_CONV_2D"), kinds.count("ADD")
    if (dw, adds) != (V2_DEPTHWISE, V2_RESIDUAL_ADDS):
        guess = " (this looks like a MobileNetV1)" if adds == 0 and dw == 13 else ""
        raise TFLiteError(f"{graph.path} is not a MobileNetV2: it has {dw} depthwise convs and "
                          f"{adds} residual ADDs, MobileNetV2 has {V2_DEPTHWISE} and "
                          f"{V2_RESIDUAL_ADDS}{guess}; give a mobilenet_v2_*.tflite file")


class MobileNetV2TFLite(nn.Module):
    """A TFLite MobileNet graph as a float PyTorch module.

    Args:
        graph: the parsed TFLite file.
        feature_stride: 16 or 32, where ``forward_features`` stops.
    """

    def __init__(self, graph: TFLiteGraph, feature_stride: int = 32) -> None:
        super().__init__()
        unknown = sorted({op.kind for op in graph.ops} - set(SUPPORTED))
        if unknown:
            raise TFLiteError(f"{graph.path}: unsupported TFLite ops {unknown}")
        check_mobilenet_v2(graph)
        self.source = str(graph.path)
        self.layers = nn.ModuleList()
        self.plan: list[tuple[str, list[int], int, int, str | None]] = []  # kind, ins, out, layer
        stride_of = {graph.inputs[0]: 1}
        geometry = {graph.inputs[0]: (1, 0.0)}  # tensor -> (stride, centre of cell 0, pixels)
        head_at = None
        for op in graph.ops:
            if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                self._add_conv(graph, op, geometry, stride_of)
            elif op.kind == "ADD":
                a, b = op.inputs
                geometry[op.outputs[0]] = geometry[a]
                stride_of[op.outputs[0]] = stride_of[a]
                self.plan.append(("ADD", [a, b], op.outputs[0], -1, op.options.get("activation")))
            elif op.kind == "AVERAGE_POOL_2D":
                head_at = len(self.plan)
                self.plan.append(("GAP", [op.inputs[0]], op.outputs[0], -1, None))
            elif op.kind == "RESHAPE":
                self.plan.append(("FLATTEN", [op.inputs[0]], op.outputs[0], -1, None))
            # SOFTMAX: forward returns logits
        if head_at is None:
            raise TFLiteError(f"{graph.path}: no global average pool found; not a classifier")
        if feature_stride not in (16, 32):
            raise ValueError(f"feature_stride must be 16 or 32, got {feature_stride}")
        # where forward_features stops: the last op before the head whose output has the stride
        trunk = self.plan[:head_at]
        stops = [i for i, p in enumerate(trunk) if stride_of.get(p[2]) == feature_stride]
        if not stops:
            raise ValueError(f"{graph.path}: no layer with output stride {feature_stride}")
        self.stop = stops[-1]
        self.head_at = head_at
        self.input_tensor = graph.inputs[0]
        out_t = self.plan[self.stop][2]
        self.feature_stride, centre = geometry[out_t]
        self.feature_offset = centre + 0.5
        self.feature_channels = int(graph.tensor(out_t).shape[-1])
        self.num_classes = int(graph.tensor(graph.outputs[0]).shape[-1])
        self.min_input_size = 1

    def drop_classifier(self) -> None:
        """Keep only what ``forward_features`` runs (a trunk to put a new head on): the plan
        after the stop and the layers only it used (the ImageNet classifier) go."""
        self.plan = self.plan[:self.stop + 1]
        used = max(p[3] for p in self.plan if p[0] == "CONV")
        self.layers = nn.ModuleList(list(self.layers)[:used + 1])
        self.head_at = None

    def _add_conv(self, graph: TFLiteGraph, op: TFLiteOp, geometry: dict, stride_of: dict) -> None:
        w, b = conv_weight(graph, op)
        groups = 1
        if op.kind == "DEPTHWISE_CONV_2D":
            groups = graph.tensor(op.inputs[0]).shape[-1]
        o = op.options
        if o.get("dilation", (1, 1)) != (1, 1):
            raise TFLiteError(f"{graph.path}: dilated convolutions are not supported")
        self.layers.append(_TFConv(w, b, o["stride"], o["padding"], groups, o["activation"]))
        src = op.inputs[0]
        if src in geometry:  # (the classifier conv after the global pool has no geometry)
            s_in, c_in = geometry[src]
            k, s = w.shape[-1], o["stride"][1]
            # inputs padded to a multiple of the stride: SAME pads max(k - s, 0) // 2 before
            before = max(k - s, 0) // 2 if o["padding"] == "SAME" else 0
            geometry[op.outputs[0]] = (s_in * s, c_in + s_in * ((k - 1) / 2 - before))
            stride_of[op.outputs[0]] = s_in * s
        self.plan.append(("CONV", [src], op.outputs[0], len(self.layers) - 1, None))

    def _run(self, x: Tensor, upto: int) -> dict[int, Tensor]:
        values = {self.input_tensor: x}
        for kind, ins, out, layer, act in self.plan[:upto + 1]:
            if kind == "CONV":
                values[out] = self.layers[layer](values[ins[0]])
            elif kind == "ADD":
                values[out] = _activate(values[ins[0]] + values[ins[1]], act)
            elif kind == "GAP":
                values[out] = values[ins[0]].mean((2, 3), keepdim=True)
            elif kind == "FLATTEN":
                values[out] = values[ins[0]].flatten(1)
        return values

    def pad_input(self, x: Tensor, multiple: int) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % multiple, (-w) % multiple
        return F.pad(x, (0, pw, 0, ph)) if ph or pw else x

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, 3, H, W) -> (N, C, ceil(H/s), ceil(W/s))`` at ``s = feature_stride``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"input must have shape (N, 3, H, W), got {tuple(x.shape)}")
        x = self.pad_input(x, self.feature_stride)
        return self._run(x, self.stop)[self.plan[self.stop][2]]

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits ``(N, 1001)`` (index 0 = background), from the whole graph."""
        if self.head_at is None:
            raise RuntimeError("this trunk's ImageNet classifier was dropped; use "
                               "forward_features")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"input must have shape (N, 3, H, W), got {tuple(x.shape)}")
        values = self._run(self.pad_input(x, 32), len(self.plan) - 1)
        logits = values[self.plan[-1][2]]
        return logits.flatten(1)

    def extra_repr(self) -> str:
        return (f"source={Path(self.source).name!r}, feature_stride={self.feature_stride}, "
                f"feature_offset={self.feature_offset}, feature_channels={self.feature_channels}")


@register_model
def mobilenet_v2(weights: str | Path | None = None, feature_stride: int = 32,
                 **kwargs) -> MobileNetV2TFLite:
    """MobileNetV2 1.0 with ImageNet weights from a TFLite file (``weights=PATH``; nothing is
    downloaded): e.g. ``../shared/data/imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite``."""
    if weights is None:
        raise ValueError("mobilenet_v2 needs weights=PATH to a TFLite file, e.g. "
                         "../shared/data/imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite")
    if kwargs:
        raise ValueError(f"mobilenet_v2 takes weights and feature_stride, got {sorted(kwargs)}")
    return MobileNetV2TFLite(read_tflite(weights), feature_stride).eval()



# ---------------------------------------------------------------------------------------------
# trainable classifiers on the ImageNet trunk (issue 17): the paper's three heads

MOBILENET_HEADS = ("spp", "gap", "fixed")


class MobileNetV2Classifier(PooledHeadNet):
    """The ImageNet MobileNetV2 trunk (weights dequantised to float, trainable) with a new head
    on its stride-32 map (1280 channels, 7x7 at 224): pooling, then fc6, fc7, fc8.

    Heads (the same fc widths for all three):

    - ``"spp"``: max pyramid pooling over ``levels`` (default {3, 2, 1}: 14 bins); any input size.
    - ``"gap"``: global average pooling (the "1-level pyramid" with averaging, as MobileNetV2
      itself); any input size.
    - ``"fixed"``: the paper's no-SPP role: a 3x3 / stride 2 max pool that turns the 7x7 map of
      a ``input_size`` = 224 input into a fixed 3x3 grid; accepts only that input size.

    Args:
        weights: the TFLite file (its graph gives the trunk; a checkpoint then sets the values).
        head: ``"spp"``, ``"gap"`` or ``"fixed"``.
        num_classes, fc_dim, dropout: as :class:`~sppnet.models.SPPNet`.
        levels: the ``spp`` head's pyramid.
        input_size: the ``fixed`` head's input side.
    """

    def __init__(self, weights: str | Path, head: str = "spp", num_classes: int = 1000,
                 fc_dim: int = 1024, dropout: float = 0.5,
                 levels: tuple[int, ...] = (3, 2, 1), input_size: int = 224) -> None:
        super().__init__()
        if head not in MOBILENET_HEADS:
            raise ValueError(f"head must be one of {MOBILENET_HEADS}, got {head!r}")
        trunk = MobileNetV2TFLite(read_tflite(weights), feature_stride=32)
        trunk.drop_classifier()
        self.features = trunk
        self.name = f"mobilenet_v2_{head}"
        self.head = head
        self.feature_stride = trunk.feature_stride
        self.feature_offset = trunk.feature_offset
        self.feature_channels = c = trunk.feature_channels
        self.min_input_size = 1
        self.fixed_input_size: int | None = None
        if head == "spp":
            self.pool: nn.Module = SpatialPyramidPooling(levels)
            self.spp_levels: tuple[int, ...] | None = tuple(self.pool.levels)
            pooled = self.pool.output_dim(c)
        elif head == "gap":
            self.pool = SpatialPyramidPooling((1,), "avg")
            self.spp_levels = (1,)
            self.pool_mode = "avg"
            pooled = c
        else:
            side = -(-input_size // trunk.feature_stride)
            self.pool = nn.MaxPool2d(3, 2)
            self.pool_side = (side - 3) // 2 + 1
            if self.pool_side < 1:
                raise ValueError(f"input_size {input_size} is too small for the fixed head")
            self.fixed_input_size = input_size
            self.spp_levels = None
            pooled = c * self.pool_side ** 2
        self._build_fcs(pooled, fc_dim, num_classes, dropout)
        self._init_fcs()

    def feature_size(self, h: int, w: int) -> tuple[int, int]:
        """``(ceil(h / 32), ceil(w / 32))``: the map of an ``h x w`` input."""
        s = self.feature_stride
        return -(-h // s), -(-w // s)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, 3, H, W) -> (N, 1280, ceil(H/32), ceil(W/32))``."""
        return self.features.forward_features(x)

    def extra_repr(self) -> str:
        return f"head={self.head!r}, fc_dim={self.fc6.out_features}"


def _mobilenet_classifier(head: str):
    name = f"mobilenet_v2_{head}"

    def builder(weights: str | Path | None = None, **kwargs) -> MobileNetV2Classifier:
        if weights is None:
            raise ValueError(f"{name} needs weights=PATH to the TFLite file (its graph and "
                             "ImageNet values), e.g. "
                             "../shared/data/imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite")
        if head != "spp" and "levels" in kwargs:
            raise ValueError(f"{name} has no pyramid; levels are for mobilenet_v2_spp")
        if head != "fixed" and "input_size" in kwargs:
            raise ValueError(f"{name} accepts any input size; input_size is for "
                             "mobilenet_v2_fixed")
        return MobileNetV2Classifier(weights, head, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"ImageNet MobileNetV2 (TFLite, trainable) with the {head!r} head; see "
                       ":class:`MobileNetV2Classifier`.")
    register_model(builder)


for _head in MOBILENET_HEADS:
    _mobilenet_classifier(_head)
