"""Stage 6: the trained detector — its parts (the trunk, the fc head, the SVMs per feature layer,
the box regressors) and its inference settings, and how each part applies to pooled windows.
Running it over images is :mod:`.run` (the one run loop); its files are :mod:`.detector_files`.

Shapes: R windows, D pool5 dims, F SVM feature dims, K classes, M detections.

A detector directory holds ``detector.json`` (classes, backbone, settings) and
``detector.safetensors`` (fc head, SVMs per feature layer, box regressors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..ops import BoxCoder, spp_output_dim
from ..utils.config import apply_overrides
from .bbox_reg import BoxRegressor
from .config import InferenceSettings
from .detector_files import FORMAT, KNOWN_FORMATS, load_trunk, read_detector, write_detector
from .features import BackboneSpec, load_backbone
from .head import DetectionHead
from .run import (
    Detections,
    detect_image,
    detect_images,
    postprocess,
    rcnn_features,
    spp_features,
    usable_windows,
    window_features,
)

__all__ = ["Detections", "SPPDetector", "InferenceSettings", "load_detector", "as_rgb_array",
           "usable_windows", "FORMAT", "KNOWN_FORMATS"]


def as_rgb_array(image) -> np.ndarray:
    """An RGB ``(H, W, 3)`` uint8 array from a path, a PIL image, an array or a tensor, by the
    one rule of :mod:`sppnet.data.decode` (:func:`~sppnet.data.decode.to_rgb_array`): the same
    picture gives the same array, and so the same detections, whichever way it comes in."""
    from ..data.decode import to_rgb_array

    return to_rgb_array(image)


def load_detector(directory: str | Path, device: str = "auto") -> SPPDetector:
    """A trained detector (``train-det``'s ``OUTPUT_DIR/model``), ready to call::

        det = load_detector("runs/det/fruit_mnv2/model", device="cpu")
        out = det([img1, img2])
        out[0]["boxes"], out[0]["scores"], out[0]["labels"], out[0]["names"]

    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``: the conv maps,
    window pooling, fc layers, SVMs, box regression and NMS run there; results come back on
    the CPU. Proposals are computed on the CPU."""
    from ..utils.device import resolve_device

    return SPPDetector.load(directory).to(resolve_device(device))


class SPPDetector(nn.Module):
    """Backbone (fixed) + fc head + per-layer SVMs + box regressors."""

    def __init__(self, backbone: nn.Module, spec: BackboneSpec, head: DetectionHead,
                 classes: Sequence[str], settings: InferenceSettings,
                 svms: dict[str, tuple[Tensor, Tensor, float]] | None = None,
                 regressor: BoxRegressor | None = None) -> None:
        super().__init__()
        # channels-last weights to match compute_maps' channels-last input (bench detect
        # measures the difference)
        self.backbone = backbone.eval().to(memory_format=torch.channels_last)
        self.spec = spec
        self.head = head.eval()
        self.classes = list(classes)
        self.settings = settings
        self.svms = dict(svms or {})  # layer -> (W (F, K), b (K,), feature scale)
        self.regressor = regressor
        self._fast: tuple[str, DetectionHead] | None = None
        self._pool_buffer: Tensor | None = None  # reused pooled-window output (detect)
        self.coder = BoxCoder()  # box deltas -> boxes, for either regression

    @property
    def device(self) -> torch.device:
        return self.head.fc6.weight.device

    def _apply(self, fn, recurse: bool = True):
        # .to(device) / .cuda() / .cpu() move the SVMs and box regressors too (plain tensors,
        # not parameters); derived heads and buffers are made again on the new device
        super()._apply(fn, recurse)
        self.svms = {k: (fn(w), fn(b), s) for k, (w, b, s) in self.svms.items()}
        if self.regressor is not None:
            self.regressor = replace(self.regressor, weight=fn(self.regressor.weight),
                                     bias=fn(self.regressor.bias))
        self._fast, self._pool_buffer = None, None
        return self

    def configure(self, settings: InferenceSettings | None = None, **changes) -> SPPDetector:
        """Use other inference settings: ``settings`` (whole), then ``changes`` (``scales=``,
        ``fc=``, ``score=``, ``proposal=``, the proposal settings' earlier names
        ``proposer=``, ``ss_max_side=``, ``max_proposals=``, ...). The settings are frozen, so
        this makes new ones through the one config mechanism
        (:func:`sppnet.utils.config.apply_overrides`); a bad value fails here, naming the
        setting. Returns ``self``."""
        known = [f.name for f in fields(InferenceSettings)] + list(InferenceSettings.ALIASES)
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown inference setting(s) {unknown}; known: "
                             f"{', '.join(known)}")
        new = apply_overrides(settings or self.settings, changes)
        new.validate()
        asked = (new.score, new.svm_layer) != (self.settings.score, self.settings.svm_layer)
        if asked and new.score == "svm" and new.svm_layer not in self.svms:
            raise ValueError(f"score svm on {new.svm_layer!r}: this detector has SVMs on "
                             f"{sorted(self.svms) or 'no layer'}; use --svm-layer one of them "
                             f"or --score softmax")
        old, self.settings = self.settings, new
        if new.fc != old.fc:
            self.scoring_head()  # a bad compression spec fails here
        return self

    def scoring_head(self) -> DetectionHead:
        """The head scoring uses: as trained, or compressed per ``settings.fc``."""
        fc = self.settings.fc
        if fc == "fp32":
            return self.head
        if fc == "int8" and self.device.type != "cpu":
            raise ValueError(f"fc int8 (dynamic quantisation) runs on the CPU only; the "
                             f"detector is on {self.device}: use fc fp32 or svd:R6,R7")
        if self._fast is None or self._fast[0] != fc:
            self._fast = (fc, self.head.compressed(fc))
        return self._fast[1]

    def _buffer(self, rows: int, like: Tensor) -> Tensor:
        """A ``(rows, D)`` view of the pooled-window buffer reused from image to image."""
        dim = spp_output_dim(like.shape[0], self.settings.levels)
        buf = self._pool_buffer
        if (buf is None or buf.shape[1] != dim or buf.shape[0] < rows or buf.dtype != like.dtype
                or buf.device != like.device):
            buf = torch.empty(max(rows, 2048), dim, dtype=like.dtype, device=like.device)
            self._pool_buffer = buf
        return buf[:rows]

    # ------------------------------------------------------------------ the parts, applied
    @torch.no_grad()
    def score_pooled(self, pooled: Tensor, score: str | None = None,
                     svm_layer: str | None = None) -> Tensor:
        """Class scores ``(R, K)`` of pooled windows."""
        score = score or self.settings.score
        head = self.scoring_head()
        if score == "softmax":
            return torch.softmax(head(pooled), 1)[:, 1:]
        layer = svm_layer or self.settings.svm_layer
        if layer not in self.svms:
            raise ValueError(f"no SVMs trained on {layer!r}; have {sorted(self.svms)}")
        w, b, s = self.svms[layer]
        return (head.features(pooled, layer) * s) @ w + b

    @torch.no_grad()
    def head_outputs(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """Softmax scores ``(R, K)`` and the head's box deltas ``(R, K, 4)`` from one fc pass
        (a head trained end to end)."""
        return self.scoring_head().scores_and_deltas(pooled)

    def box_deltas(self, pooled: Tensor, source: str | None = None) -> Tensor | None:
        """``(R, K, 4)`` deltas of ``source`` (``regressor`` or ``head``; default the
        settings'), or ``None`` when the detector has no such regression."""
        source = source or self.settings.bbox_source
        if source == "head":
            return self.head_outputs(pooled)[1] if self.head.box_deltas else None
        return self.regressor.deltas(pooled) if self.regressor is not None else None

    # ------------------------------------------------------------------ the run loop's steps
    def pooled_spp(self, image: np.ndarray, boxes: Tensor, dedupe: bool = True,
                   reuse_buffer: bool = False,
                   maps: list[Tensor] | None = None) -> tuple[Tensor, Tensor | None, dict]:
        """:func:`sppnet.detection.run.spp_features` of this detector."""
        return spp_features(self, image, boxes, dedupe, reuse_buffer, maps)

    def pooled_rcnn(self, image: np.ndarray, boxes: Tensor) -> tuple[Tensor, None, dict]:
        """:func:`sppnet.detection.run.rcnn_features` of this detector."""
        return rcnn_features(self, image, boxes)

    def pooled(self, image: np.ndarray, boxes: Tensor, mode: str = "spp",
               reuse_buffer: bool = False,
               maps: list[Tensor] | None = None) -> tuple[Tensor, Tensor | None, dict]:
        """Pool5 of the windows ``boxes (R, 4)`` (:func:`sppnet.detection.run.window_features`)."""
        return window_features(self, image, boxes, mode, reuse_buffer, maps)

    def postprocess(self, pooled: Tensor, boxes: Tensor, scores: Tensor,
                    image_size: tuple[int, int], bbox_reg: bool | None = None,
                    inverse: Tensor | None = None, nms_iou: float | None = None,
                    max_dets: int | None = None, deltas: Tensor | None = None,
                    bbox_source: str | None = None) -> Detections:
        """Regress, clip, per-class NMS (:func:`sppnet.detection.run.postprocess`)."""
        return postprocess(self, pooled, boxes, scores, image_size, bbox_reg, inverse, nms_iou,
                           max_dets, deltas, bbox_source)

    def detect(self, image: np.ndarray, boxes: Tensor | np.ndarray, mode: str = "spp",
               maps: list[Tensor] | None = None) -> Detections:
        """Detections for an RGB ``(H, W, 3)`` uint8 image and its proposal windows
        (:func:`sppnet.detection.run.detect_image`)."""
        return detect_image(self, image, boxes, mode, maps)

    # ------------------------------------------------------------------ the Python API
    @torch.no_grad()
    def forward(self, images, proposals=None, mode: str | None = None, workers: int = 2,
                batch_size: int = 8) -> list[dict]:
        """Detect in one image or a list: file paths, PIL images, NumPy arrays ``(H, W[, C])``
        or tensors ``([C, ]H, W)`` of any dtype, converted by the one rule of
        :mod:`sppnet.data.decode` (uint16 and 0-255 floats included). ``proposals``: one
        ``(R, 4)`` xyxy array per image, or ``None`` for the proposer and settings the
        detector was trained with (computed in ``workers`` processes for three images or
        more). Images of one size go through the conv trunk together, ``batch_size`` at a time
        (SPP mode). Returns torchvision-style dicts: ``boxes (M, 4)``, ``scores``, ``labels``
        (indices into ``classes``) and ``names``. (The run loop, :mod:`sppnet.detection.run`.)"""
        return detect_images(self, images, proposals, mode, workers, batch_size)

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path) -> Path:
        """``detector.safetensors`` and ``detector.json``
        (:func:`sppnet.detection.detector_files.write_detector`)."""
        return write_detector(directory, self)

    @classmethod
    def load(cls, directory: str | Path, backbone: nn.Module | None = None,
             weights: str | Path | None = None) -> SPPDetector:
        """The detector saved in ``directory``
        (:func:`sppnet.detection.detector_files.read_detector`: its metadata checked field by
        field; a file from another sppnet version read or refused naming that version).
        ``weights``: the backbone's weight file where the path the detector recorded does not
        exist here (its SHA-256 must match the recorded one)."""
        parts = read_detector(directory, weights)
        if backbone is None:
            backbone = load_backbone(parts.spec)
            if parts.trunk:  # trained end to end: its own conv weights
                load_trunk(backbone, parts.trunk, parts.spec,
                           Path(directory) / "detector.safetensors")
        return cls(backbone, parts.spec, parts.head, parts.classes, parts.settings, parts.svms,
                   parts.regressor)
