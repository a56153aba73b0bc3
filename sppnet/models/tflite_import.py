"""Read a TFLite flatbuffer (uint8-quantized CNNs such as MobileNet) into float tensors and ops.

Weights are dequantized as ``(q - zero_point) * scale``; int32 biases carry ``scale = input scale x
weight scale`` and zero point 0. Layouts are converted to PyTorch's: conv ``OHWI -> OIHW``,
depthwise ``[1, kh, kw, C*m] -> [C*m, 1, kh, kw]``. Nothing is downloaded: the file is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TFLiteError", "TFLiteGraph", "TFLiteOp", "TFLiteTensor", "read_tflite"]

_NUMPY_TYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8, 7: np.int16}
ACTIVATIONS = {0: None, 1: "relu", 3: "relu6"}


class TFLiteError(ValueError):
    """A file that is missing, not a TFLite model, or uses an op this importer does not know."""


@dataclass
class TFLiteTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: Any
    scale: float | None
    zero_point: int | None
    data: np.ndarray | None  # raw constant data (None for activations)

    def dequantized(self) -> np.ndarray:
        if self.data is None:
            raise TFLiteError(f"tensor {self.name!r} holds no constant data")
        if self.scale is None:
            return self.data.astype(np.float32)
        return ((self.data.astype(np.float64) - (self.zero_point or 0)) * self.scale).astype(
            np.float32)


@dataclass
class TFLiteOp:
    kind: str  # CONV_2D, DEPTHWISE_CONV_2D, ADD, AVERAGE_POOL_2D, RESHAPE, SOFTMAX, ...
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFLiteGraph:
    path: Path
    tensors: list[TFLiteTensor]
    ops: list[TFLiteOp]
    inputs: list[int]
    outputs: list[int]

    def tensor(self, i: int) -> TFLiteTensor:
        return self.tensors[i]


def _options(op, kind: str) -> dict[str, Any]:
    import tflite

    table = op.BuiltinOptions()
    if table is None:
        return {}
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        o = tflite.Conv2DOptions() if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions()
        o.Init(table.Bytes, table.Pos)
        out = {"padding": "SAME" if o.Padding() == 0 else "VALID", "stride": (o.StrideH(),
               o.StrideW()), "activation": ACTIVATIONS.get(o.FusedActivationFunction(), "?"),
               "dilation": (o.DilationHFactor(), o.DilationWFactor())}
        if kind == "DEPTHWISE_CONV_2D":
            out["depth_multiplier"] = o.DepthMultiplier()
        return out
    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        o = tflite.Pool2DOptions()
        o.Init(table.Bytes, table.Pos)
        return {"padding": "SAME" if o.Padding() == 0 else "VALID",
                "stride": (o.StrideH(), o.StrideW()),
                "kernel": (o.FilterHeight(), o.FilterWidth()),
                "activation": ACTIVATIONS.get(o.FusedActivationFunction(), "?")}
    if kind == "ADD":
        o = tflite.AddOptions()
        o.Init(table.Bytes, table.Pos)
        return {"activation": ACTIVATIONS.get(o.FusedActivationFunction(), "?")}
    return {}


def read_tflite(path: str | Path) -> TFLiteGraph:
    """Parse ``path`` (the first subgraph) into tensors and ops."""
    path = Path(path)
    if not path.is_file():
        raise TFLiteError(f"TFLite file {path} does not exist; pass the path to a .tflite model "
                          "(e.g. ../shared/data/imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite)")
    try:
        import tflite
    except ImportError as e:  # pragma: no cover
        raise TFLiteError("reading TFLite files needs the 'tflite' package: "
                          "pip install tflite flatbuffers") from e
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise TFLiteError(f"{path} is not a TFLite flatbuffer (no 'TFL3' identifier); is the file "
                          "truncated or of another format?")
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        g = model.Subgraphs(0)
        names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        tensors = []
        for i in range(g.TensorsLength()):
            t = g.Tensors(i)
            q = t.Quantization()
            scale = float(q.ScaleAsNumpy()[0]) if q is not None and q.ScaleLength() else None
            zp = int(q.ZeroPointAsNumpy()[0]) if q is not None and q.ZeroPointLength() else None
            if q is not None and q.ScaleLength() > 1:
                raise TFLiteError(f"{path}: tensor {t.Name().decode()} is quantized per channel; "
                                  "only per-tensor quantization is supported")
            raw = model.Buffers(t.Buffer()).DataAsNumpy()
            dtype = _NUMPY_TYPES.get(t.Type())
            shape = tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            data = None
            if not isinstance(raw, int) and raw is not None and len(raw) and dtype is not None:
                data = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape)
            tensors.append(TFLiteTensor(i, t.Name().decode(), shape, dtype, scale, zp, data))
        ops = []
        for i in range(g.OperatorsLength()):
            op = g.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "UNKNOWN")
            ops.append(TFLiteOp(kind, [int(v) for v in op.InputsAsNumpy()],
                                [int(v) for v in op.OutputsAsNumpy()], _options(op, kind)))
        inputs = [int(v) for v in g.InputsAsNumpy()]
        outputs = [int(v) for v in g.OutputsAsNumpy()]
    except TFLiteError:
        raise
    except Exception as e:  # flatbuffers raise assorted errors on corrupt data
        raise TFLiteError(f"{path}: corrupt TFLite flatbuffer ({type(e).__name__}: {e})") from e
    return TFLiteGraph(path, tensors, ops, inputs, outputs)


def conv_weight(graph: TFLiteGraph, op: TFLiteOp) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch-layout float ``(weight, bias)`` of a CONV_2D / DEPTHWISE_CONV_2D op."""
    w = graph.tensor(op.inputs[1]).dequantized()
    b = graph.tensor(op.inputs[2]).dequantized() if len(op.inputs) > 2 and op.inputs[2] >= 0 \
        else np.zeros(w.shape[0] if op.kind == "CONV_2D" else w.shape[-1], np.float32)
    if op.kind == "CONV_2D":
        return np.ascontiguousarray(w.transpose(0, 3, 1, 2)), b  # OHWI -> OIHW
    _, kh, kw, cm = w.shape
    return np.ascontiguousarray(w.reshape(kh, kw, cm).transpose(2, 0, 1)[:, None]), b
