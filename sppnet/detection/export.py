"""A trained SPP-net detector as one ONNX graph that runs without PyTorch.

Shapes: R windows, K classes, (H, W) the original image, (H', W') the image at the detector's
scale.

The graph (:class:`DetectorGraph`) takes

- ``image`` ``(1, 3, H', W')`` float32: the RGB image resized so that its shorter side is the
  detector's scale (:func:`sppnet.detection.features.scaled_sizes`: ``f = min(s / min(H, W),
  2000 / max(H, W))``, ``(max(1, round(H f)), max(1, round(W f)))``; Pillow bilinear, as
  :func:`sppnet.data.transforms.resize_to`) and normalised as ``(pixel - mean) * input_scale``
  (the backbone's ``BackboneSpec``), channels first;
- ``boxes`` ``(R, 4)`` float32: the windows in original-image pixels, ``xyxy``, each of
  positive width and height (what :meth:`SPPDetector.detect` keeps);
- ``image_size`` ``(2,)`` int64: the original ``(H, W)``;

and gives ``scores`` ``(R, K)`` (the detector's scoring: its ``svm_layer`` SVMs, or the softmax
without the background column) and ``boxes`` ``(R, K, 4)`` (box-regressed when the detector
regresses, clipped to the original image). In between it does what ``SPPDetector.detect`` does
for one scale: conv maps once, each window scaled to the resized image and pooled from the map by
the window pyramid (:func:`sppnet.ops.spp_roi_pool`, which exports as ONNX ``MaxRoiPool``), the
fc head and scoring, the box regressor. Windows that project onto the same map cells are pooled
once by ``detect`` and once each here: the same cells give the same features, so the results
agree.

Per-class NMS and the ``max_dets`` cut stay outside the graph, done by the runner in NumPy
(``docs/onnx_runner.py``): sppnet's greedy NMS compares IoUs in float64 and visits ties in window
order, where ONNX ``NonMaxSuppression`` (ONNX Runtime) computes IoU in float32 and breaks ties
its own way, so an IoU at the threshold or two equal scores could keep another set.

:func:`runner_config` is what a runner needs besides the graph (classes, scale, normalisation,
proposal and NMS settings); :func:`export_detector` writes both.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..ops import spp_roi_pool
from .features import MAX_LONG_SIDE
from .proposals import ProposalConfig

if TYPE_CHECKING:  # pragma: no cover
    from .detector import SPPDetector

__all__ = ["DetectorGraph", "export_detector", "runner_config", "check_exportable",
           "INPUT_NAMES", "OUTPUT_NAMES", "RUNNER_FORMAT"]

INPUT_NAMES = ("image", "boxes", "image_size")
OUTPUT_NAMES = ("scores", "boxes_per_class")
RUNNER_FORMAT = "sppnet-onnx-detector-1"
OPSET = 18  # the ONNX opset the graph is written in (onnxruntime >= 1.14 runs it)


def check_exportable(det: SPPDetector) -> None:
    """Raise ``ValueError`` (one line) when the detector's inference settings have no ONNX
    form here: R-CNN mode, several scales, compressed fc layers, or SVMs it does not have."""
    st = det.settings
    if st.mode != "spp":
        raise ValueError(f"export supports detectors in SPP mode; this one scores the "
                         f"{st.mode!r} way (settings.mode)")
    if len(st.scales) != 1:
        raise ValueError(f"export supports one scale; this detector uses scales "
                         f"{tuple(st.scales)} (choose one with --scale)")
    if st.fc != "fp32":
        raise ValueError(f"export supports fc fp32; this detector is set to fc {st.fc!r}")
    if st.score not in ("svm", "softmax"):
        raise ValueError(f"score must be svm or softmax, got {st.score!r}")
    if st.score == "svm" and st.svm_layer not in det.svms:
        raise ValueError(f"the detector scores with {st.svm_layer!r} SVMs but has SVMs for "
                         f"{sorted(det.svms)}")


class DetectorGraph(nn.Module):
    """What ``SPPDetector.detect`` computes before NMS, as one traceable module (see the module
    docstring for the inputs and outputs). Built from an :class:`SPPDetector`'s public parts
    (``backbone``, ``head``, ``svms``, ``regressor``, ``settings``); shares the backbone's and
    the head's weights, copies the SVMs' and the regressor's."""

    def __init__(self, det: SPPDetector) -> None:
        super().__init__()
        check_exportable(det)
        st = det.settings
        self.backbone = det.backbone
        self.head = det.head
        self.levels = tuple(st.levels)
        self.stride = float(det.backbone.feature_stride)
        self.offset = float(det.backbone.feature_offset)
        self.score = st.score
        self.num_classes = len(det.classes)
        self.svm_layer = st.svm_layer
        if st.score == "svm":
            w, b, s = det.svms[st.svm_layer]
            self.register_buffer("svm_weight", w.detach().float())  # (F, K)
            self.register_buffer("svm_bias", b.detach().float())  # (K,)
            self.svm_scale = float(s)
        reg = det.regressor if st.bbox_reg else None
        self.coder = reg.coder if reg is not None else None
        if reg is not None:  # deltas = (s * pool5) @ W[k] + b[k] for all classes in one GEMM
            k, p, _ = reg.weight.shape
            self.register_buffer("reg_weight", reg.weight.detach().float().permute(1, 0, 2)
                                 .reshape(p, k * 4).contiguous())  # (P, K*4)
            self.register_buffer("reg_bias", reg.bias.detach().float().reshape(1, k * 4))
            self.reg_scale = float(reg.feat_scale)

    def forward(self, image: Tensor, boxes: Tensor, image_size: Tensor) -> tuple[Tensor, Tensor]:
        """``image (1, 3, H', W')``, ``boxes (R, 4)``, ``image_size (2,)`` ->
        ``scores (R, K)``, ``boxes (R, K, 4)``."""
        maps = self.backbone.forward_features(image)  # (1, C, h, w)
        r = boxes.shape[0]
        sh, sw = image.shape[-2], image.shape[-1]
        # window coordinates at the scale, as pool_windows: float32(sw / w) (a double quotient)
        scaled = torch.tensor([sw, sh, sw, sh], dtype=torch.float64, device=boxes.device)
        orig = image_size.to(torch.float64)[[1, 0, 1, 0]]
        factors = (scaled / orig).to(torch.float32)  # (4,)
        rois = torch.cat([boxes.new_zeros(r, 1), boxes * factors], 1)  # (R, 5)
        pooled = spp_roi_pool(maps, rois, self.levels, self.stride, self.offset)  # (R, D)
        if self.score == "softmax":
            scores = torch.softmax(self.head(pooled), 1)[:, 1:]  # (R, K)
        else:
            feats = self.head.features(pooled, self.svm_layer)
            scores = (feats * self.svm_scale) @ self.svm_weight + self.svm_bias  # (R, K)
        k = scores.shape[1]
        if self.coder is not None:
            deltas = torch.addmm(self.reg_bias, pooled, self.reg_weight,
                                 alpha=self.reg_scale)  # (R, K*4)
            cand = self.coder.decode(deltas, boxes).reshape(r, k, 4)  # (R, K, 4)
        else:
            cand = boxes[:, None, :].expand(r, k, 4)
        # clip_boxes with the original size given as a tensor: x into [0, W], y into [0, H]
        limits = image_size.to(cand.dtype)[[1, 0, 1, 0]]  # (4,) W, H, W, H
        cand = torch.minimum(torch.clamp(cand, min=0.0), limits)
        return scores, cand


@contextlib.contextmanager
def _quiet_loggers():
    """The exporter logs, as warnings, what sympy cannot simplify about ceil-mode pooling sizes
    and which torchvision ops it skips: noise for this graph (the sizes stay symbolic, and the
    written graph is checked at several sizes by the tests)."""
    names = ("torch.fx.experimental.symbolic_shapes", "torch.onnx._internal.exporter._registration")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)`",
                                    FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def runner_config(det: SPPDetector, onnx_file: str) -> dict:
    """What a runner needs besides the graph: classes, the scale and resize rule, the input
    normalisation, the proposals the detector was trained with, NMS settings."""
    st = det.settings
    proposals = ProposalConfig(method=st.proposer, max_side=st.ss_max_side,
                               max_proposals=st.max_proposals)
    return {
        "format": RUNNER_FORMAT,
        "onnx": onnx_file,
        "classes": list(det.classes),
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES),
        # resize so the shorter side is `scale`, the longer at most `max_long_side`; Pillow
        # bilinear; then (pixel - mean) * input_scale, RGB, channels first
        "scale": int(st.scales[0]),
        "max_long_side": MAX_LONG_SIDE,
        "mean": float(det.spec.mean),
        "input_scale": float(det.spec.input_scale),
        "proposals": {k: v for k, v in asdict(proposals).items() if k != "version"},
        "nms_iou": float(st.nms_iou),
        "max_dets": int(st.max_dets),
        "score": st.score,
        "svm_layer": st.svm_layer if st.score == "svm" else None,
        "bbox_reg": bool(st.bbox_reg and det.regressor is not None),
        "levels": list(st.levels),
    }


def export_detector(det: SPPDetector, path: str | Path, example_size: tuple[int, int] = (224, 288),
                    ) -> tuple[Path, Path]:
    """Write ``det`` as one ONNX graph to ``path`` (dynamic image size and window count) and
    :func:`runner_config` to ``path`` with the suffix ``.json``. Returns both paths.

    ``example_size``: the ``(H', W')`` of the example input the graph is traced with (any size
    the backbone takes)."""
    path = Path(path)
    graph = DetectorGraph(det).eval()
    device = next(iter(det.head.parameters())).device
    h, w = example_size
    image = torch.zeros(1, 3, h, w, device=device)
    boxes = torch.tensor([[0.0, 0.0, w / 2, h / 2], [w / 4, h / 4, w - 1.0, h - 1.0],
                          [1.0, 2.0, 40.0, 30.0]], device=device)
    size = torch.tensor([h, w], dtype=torch.int64, device=device)
    dyn = torch.export.Dim.DYNAMIC  # Dim.DYNAMIC: ceil-mode pools add guards named Dims refuse
    with torch.no_grad(), _quiet_loggers():
        program = torch.onnx.export(
            graph, (image, boxes, size), dynamo=True, opset_version=OPSET,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"image": {2: dyn, 3: dyn}, "boxes": {0: dyn}, "image_size": None},
            verbose=False)
    fixed = [(v.name, d) for v in program.model.graph.inputs[:2]
             for d in (v.shape.dims[2:] if v.name == "image" else v.shape.dims[:1])
             if isinstance(d, int)]
    if fixed:  # a backbone that fixes the sizes would give a graph for one image size only
        raise ValueError(f"the exported graph fixed input dimensions {fixed}; the backbone "
                         f"does not trace with symbolic sizes")
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    meta = path.with_suffix(".json")
    meta.write_text(json.dumps(runner_config(det, path.name), indent=2) + "\n")
    return path, meta
