"""A trained SPP-net detector as one ONNX graph that runs without PyTorch.

Shapes: R windows, K classes, S scales, (H, W) the original image, (H'_s, W'_s) the image at
scale ``s``.

The graph (:class:`DetectorGraph`) takes

- ``image`` ``(1, 3, H', W')`` float32 (``image_0 .. image_{S-1}`` for a multi-scale
  detector, in its ``scales`` order): the RGB image resized so that its shorter side is the
  scale (:func:`sppnet.detection.features.scaled_sizes`: ``f = min(s / min(H, W), 2000 /
  max(H, W))``, ``(max(1, round(H f)), max(1, round(W f)))``; Pillow bilinear, as
  :func:`sppnet.data.transforms.resize_to`) and normalised as ``(pixel - mean) * input_scale``
  (the backbone's ``BackboneSpec``), channels first;
- ``boxes`` ``(R, 4)`` float32: the windows in original-image pixels, ``xyxy``, each of
  positive width and height (what :meth:`SPPDetector.detect` keeps);
- ``image_size`` ``(2,)`` int64: the original ``(H, W)``;

and gives ``scores`` ``(R, K)`` (the detector's scoring: its ``svm_layer`` SVMs, or the softmax
without the background column) and ``boxes_per_class`` ``(R, K, 4)`` (box-regressed when the
detector regresses, clipped to the original image). In between it does what
``SPPDetector.detect`` does: conv maps once per scale; each window scaled to its scale — with
several scales, the one where its area is closest to 224² — and projected onto that map's
cells; the window pyramid (:func:`sppnet.ops.spp_pool_cells`, exported as ONNX ``MaxRoiPool``;
several scales' maps go in as one zero-padded batch, the scale being each window's batch index);
the fc head and scoring; the box regressor. Windows that project onto the same cells are pooled
once by ``detect`` and once each here: the same cells give the same features.

Per-class NMS and the ``max_dets`` cut stay outside the graph, done by the runner in NumPy
(``docs/onnx_runner.py``): sppnet's greedy NMS compares IoUs in float64 and visits ties in window
order, where ONNX ``NonMaxSuppression`` (ONNX Runtime) computes IoU in float32 and breaks ties
its own way, so an IoU at the threshold or two equal scores could keep another set.

:func:`runner_config` is what a runner needs besides the graph (classes, scales, normalisation,
proposal and NMS settings); :func:`export_detector` writes both.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import project_boxes, spp_pool_cells
from .features import MAX_LONG_SIDE, TARGET_AREA

if TYPE_CHECKING:  # pragma: no cover
    from .detector import SPPDetector

__all__ = ["DetectorGraph", "export_detector", "runner_config", "check_exportable",
           "input_names", "scale_indices", "OUTPUT_NAMES", "RUNNER_FORMAT"]

OUTPUT_NAMES = ("scores", "boxes_per_class")
RUNNER_FORMAT = "sppnet-onnx-detector-1"
OPSET = 18  # the ONNX opset the graph is written in (onnxruntime >= 1.14 runs it)


def input_names(n_scales: int) -> list[str]:
    """The graph's inputs: ``image`` (one scale) or ``image_0 ..`` (one per scale, in the
    detector's ``scales`` order), then ``boxes`` and ``image_size``."""
    images = ["image"] if n_scales == 1 else [f"image_{k}" for k in range(n_scales)]
    return [*images, "boxes", "image_size"]


def check_exportable(det: SPPDetector) -> None:
    """Raise ``ValueError`` (one line) when the detector's inference settings have no ONNX
    form here: R-CNN mode, compressed fc layers, or SVMs it does not have."""
    st = det.settings
    if st.mode != "spp":
        raise ValueError(f"export supports detectors in SPP mode; this one scores the "
                         f"{st.mode!r} way (settings.mode)")
    if st.fc != "fp32":
        raise ValueError(f"export supports fc fp32; this detector is set to fc {st.fc!r}")
    if st.score not in ("svm", "softmax"):
        raise ValueError(f"score must be svm or softmax, got {st.score!r}")
    if st.score == "svm" and st.svm_layer not in det.svms:
        raise ValueError(f"the detector scores with {st.svm_layer!r} SVMs but has SVMs for "
                         f"{sorted(det.svms)}")


def scale_indices(boxes: Tensor, image_size: Tensor, scaled: Sequence[Sequence[int]]) -> Tensor:
    """:func:`sppnet.detection.features.select_scales` with the original size as a tensor and
    the scaled sizes ``(H'_s, W'_s)`` as (symbolic) ints: ``LongTensor[R]``, the scale at which
    each window's area is closest to 224^2, by the same float64 arithmetic."""
    orig = image_size.to(torch.float64)  # (2,) H, W
    sizes = torch.tensor([list(hw) for hw in scaled], dtype=torch.float64,
                         device=boxes.device)  # (S, 2)
    factors = (sizes[:, 0] / orig[0]) * (sizes[:, 1] / orig[1])  # (S,) (sh / H) * (sw / W)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).double()  # (R,)
    return (area[:, None] * factors[None, :] - TARGET_AREA).abs().argmin(1)


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
        # box deltas: the head's own (trained end to end) or the paper's ridge regression
        self.head_deltas = bool(st.bbox_reg and st.bbox_source == "head"
                                and det.head.box_deltas)
        reg = det.regressor if st.bbox_reg and not self.head_deltas else None
        self.coder = reg.coder if reg is not None else (det.coder if self.head_deltas else None)
        if reg is not None:  # deltas = (s * pool5) @ W[k] + b[k] for all classes in one GEMM
            k, p, _ = reg.weight.shape
            self.register_buffer("reg_weight", reg.weight.detach().float().permute(1, 0, 2)
                                 .reshape(p, k * 4).contiguous())  # (P, K*4)
            self.register_buffer("reg_bias", reg.bias.detach().float().reshape(1, k * 4))
            self.reg_scale = float(reg.feat_scale)

    def forward(self, images: Sequence[Tensor], boxes: Tensor,
                image_size: Tensor) -> tuple[Tensor, Tensor]:
        """``images``: one ``(1, 3, H'_s, W'_s)`` per scale (in ``settings.scales`` order),
        ``boxes (R, 4)``, ``image_size (2,)`` -> ``scores (R, K)``, ``boxes (R, K, 4)``."""
        r = boxes.shape[0]
        orig = image_size.to(torch.float64)  # (2,) H, W
        maps, cells = [], []
        for image in images:
            m = self.backbone.forward_features(image)  # (1, C, h, w)
            sh, sw = image.shape[-2], image.shape[-1]
            # windows at this scale as pool_windows scales them: by float32(sw / W) (a float64
            # quotient), then projected onto the map's cells
            scaled = torch.tensor([sw, sh], dtype=torch.float64, device=boxes.device)
            f = scaled / orig[[1, 0]]  # (2,) sw / W, sh / H
            cells.append(project_boxes(boxes * f.to(torch.float32)[[0, 1, 0, 1]], self.stride,
                                       m.shape[-2:], self.offset))  # (R, 4)
            maps.append(m)
        if len(maps) == 1:
            scale_index = torch.zeros(r, dtype=torch.long, device=boxes.device)
            cell, stacked = cells[0], maps[0]
        else:  # each window at the scale where its area is closest to 224^2
            scale_index = scale_indices(boxes, image_size, [x.shape[-2:] for x in images])
            cell = torch.stack(cells)[scale_index, torch.arange(r, device=boxes.device)]
            # one batch of maps, zero-padded to the largest: every window's cells lie in its
            # own map, so the padding is never read
            hm, wm = maps[0].shape[-2], maps[0].shape[-1]
            for m in maps[1:]:
                hm, wm = torch.sym_max(hm, m.shape[-2]), torch.sym_max(wm, m.shape[-1])
            stacked = torch.cat([F.pad(m, (0, wm - m.shape[-1], 0, hm - m.shape[-2]))
                                 for m in maps])  # (S, C, hm, wm)
        pooled = spp_pool_cells(stacked, cell, scale_index, self.levels)  # (R, D)
        head_deltas = None
        if self.head_deltas:  # one fc pass for the class scores and the box deltas
            logits, head_deltas = self.head.logits_and_deltas(pooled)  # (R, K+1), (R, K, 4)
            head_deltas = head_deltas * self.head.bbox_std + self.head.bbox_mean
        if self.score == "softmax":
            logits = logits if head_deltas is not None else self.head(pooled)
            scores = torch.softmax(logits, 1)[:, 1:]  # (R, K)
        else:
            feats = self.head.features(pooled, self.svm_layer)
            scores = (feats * self.svm_scale) @ self.svm_weight + self.svm_bias  # (R, K)
        k = scores.shape[1]
        if head_deltas is not None:
            cand = self.coder.decode(head_deltas.reshape(r, k * 4), boxes).reshape(r, k, 4)
        elif self.coder is not None:
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
    return {
        "format": RUNNER_FORMAT,
        "onnx": onnx_file,
        "classes": list(det.classes),
        "inputs": input_names(len(st.scales)),
        "outputs": list(OUTPUT_NAMES),
        # one input image per scale: resized so the shorter side is the scale, the longer at
        # most `max_long_side`; Pillow bilinear; then (pixel - mean) * input_scale, RGB, CHW;
        # mean and input_scale a number, or one per channel (R, G, B: ImageNet trunks)
        "scales": [int(v) for v in st.scales],
        "max_long_side": MAX_LONG_SIDE,
        "mean": _per_channel_or_one(det.spec.mean),
        "input_scale": _per_channel_or_one(det.spec.input_scale),
        "proposals": {k: v for k, v in asdict(st.proposal).items() if k != "version"},
        "nms_iou": float(st.nms_iou),
        "max_dets": int(st.max_dets),
        "score": st.score,
        "svm_layer": st.svm_layer if st.score == "svm" else None,
        "bbox_reg": bool(st.bbox_reg and (det.regressor is not None or (
            st.bbox_source == "head" and det.head.box_deltas))),
        "levels": list(st.levels),
    }


def _per_channel_or_one(value: float | tuple[float, ...]) -> float | list[float]:
    return [float(v) for v in value] if isinstance(value, (tuple, list)) else float(value)


def export_detector(det: SPPDetector, path: str | Path) -> tuple[Path, Path]:
    """Write ``det`` as one ONNX graph to ``path`` (dynamic image sizes and window count) and
    :func:`runner_config` to ``path`` with the suffix ``.json``. Returns both paths."""
    path = Path(path)
    config = runner_config(det, path.name)  # before any file is written
    graph = DetectorGraph(det).eval()
    device = next(iter(det.head.parameters())).device
    n = len(det.settings.scales)
    # example sizes all different (two equal example sizes would be traced as one symbol)
    sizes = [(160 + 37 * k, 213 + 41 * k) for k in range(n)]
    images = [torch.zeros(1, 3, h, w, device=device) for h, w in sizes]
    boxes = torch.tensor([[0.0, 0.0, 80.0, 60.0], [40.0, 30.0, 159.0, 150.0],
                          [1.0, 2.0, 40.0, 30.0], [5.0, 5.0, 150.0, 100.0],
                          [100.0, 90.0, 120.0, 130.0], [3.0, 60.0, 90.0, 140.0],
                          [0.0, 0.0, 213.0, 160.0]], device=device)  # 7 windows
    size = torch.tensor(sizes[0], dtype=torch.int64, device=device)
    dyn = torch.export.Dim.DYNAMIC  # Dim.DYNAMIC: ceil-mode pools add guards named Dims refuse
    names = input_names(n)
    with torch.no_grad(), _quiet_loggers():
        program = torch.onnx.export(
            graph, (images, boxes, size), dynamo=True, opset_version=OPSET,
            input_names=names, output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"images": [{2: dyn, 3: dyn}] * n, "boxes": {0: dyn},
                            "image_size": None},
            verbose=False)
    inputs = {v.name: v.shape.dims for v in program.model.graph.inputs}
    fixed = [(name, d) for name in names[:-1]
             for d in (inputs[name][:1] if name == "boxes" else inputs[name][2:])
             if isinstance(d, int)]
    if fixed:  # a backbone that fixes the sizes would give a graph for one image size only
        raise ValueError(f"the exported graph fixed input dimensions {fixed}; the backbone "
                         f"does not trace with symbolic sizes")
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    meta = path.with_suffix(".json")
    meta.write_text(json.dumps(config, indent=2) + "\n")
    return path, meta
