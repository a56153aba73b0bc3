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

from .registry import register_model
from .tflite_import import TFLiteError, TFLiteGraph, TFLiteOp, conv_weight, read_tflite

__all__ = ["MobileNetV2TFLite", "mobilenet_v2", "same_padding"]

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
        self.conv = nn.Conv2d(in_per_group * groups, out_c, (kh, kw), stride, groups=groups)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(weight))
            self.conv.bias.copy_(torch.from_numpy(bias))
        self.same = padding == "SAME"
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

