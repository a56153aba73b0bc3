"""Detection settings, built once: frozen dataclasses with a comment per field, every constant
sourced. Imports no torch.

- :class:`ProposalConfig`: how windows are proposed (the key of the proposal cache);
- :class:`DetConfig`: what ``train-det`` trains (its ``proposal`` group: a ProposalConfig);
- :class:`InferenceSettings`: how a trained detector detects (stored in ``detector.json``; its
  ``proposal`` group: the windows it was trained with, which ``detect`` / ``eval-det`` use).
  :func:`inference_settings` makes them from a DetConfig, in one place.

R-CNN = Girshick et al. 2014 and its released code (``rcnn_train.m``,
``rcnn_train_bbox_regressor.m``);
SPP = He et al. 2014/2015, section 4 and the released SPP_net code.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from ..utils.config import (
    MAX_BATCH,
    MAX_DETECTION_SIDE,
    MAX_FC_DIM,
    MAX_LEVEL,
    MAX_WINDOWS,
    MAX_WORKERS,
    check_int,
    check_int_tuple,
    check_number,
)
from .scales import MIN_SCALE, SINGLE_SCALE

__all__ = ["DetConfig", "InferenceSettings", "ProposalConfig", "DEFAULT_PROPOSALS", "PROPOSERS",
           "UNION", "PROPOSAL_ALIASES", "inference_settings", "fc_spec"]

# -- proposals (Selective Search, EdgeBoxes; detection/proposals.py) ------------------------
MAX_ASPECT = 2.0  # OpenCV's Selective Search fails above ~2.4 (data README); pad to this
SS_MAX_SIDE = 500  # longer side Selective Search runs at (R-CNN: VOC images, ~500 px)
MAX_PROPOSALS = 2000  # per image (paper: ~2000 windows)
MIN_SIZE = 4.0  # pixels (original image) below which a window is dropped


# a "+" joins proposers: the union of their windows, each up to max_proposals (the paper's
# Sec. 4.5 trains with both Selective Search and EdgeBoxes windows)
UNION = "+"
PROPOSERS = ("selective_search_fast", "selective_search_quality", "edgeboxes",
             "selective_search_fast+edgeboxes")


@dataclass(frozen=True)
class ProposalConfig:
    version: int = 2  # 2: windows in canonical order (cache entries of version 1 are rebuilt)
    method: str = "selective_search_fast"  # or selective_search_quality, edgeboxes (no
    # learned edge model: detection/proposals.py says how its edge map is made); PROPOSERS
    max_side: int = SS_MAX_SIDE  # the proposer runs at this longer side (speed)
    max_proposals: int = MAX_PROPOSALS  # SPP/R-CNN: ~2000 selective-search windows per image
    max_aspect: float = MAX_ASPECT
    min_size: float = MIN_SIZE

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def validate(self, prefix: str = "proposal.") -> None:
        if self.method not in PROPOSERS:
            raise ValueError(f"{prefix}method (proposer) must be one of {PROPOSERS}, got "
                             f"{self.method!r}")
        check_int(f"{prefix}max_side (ss_max_side)", self.max_side, 16, MAX_DETECTION_SIDE)
        check_int(f"{prefix}max_proposals", self.max_proposals, 1, MAX_WINDOWS)
        check_number(f"{prefix}max_aspect", self.max_aspect, 1)
        check_number(f"{prefix}min_size", self.min_size, 0)


DEFAULT_PROPOSALS = ProposalConfig()  # the default settings (an immutable default argument)
# the flat names of the proposal settings before they were one group (detector.json format 1,
# train-det configs): still accepted by --set, config files and SPPDetector.configure
PROPOSAL_ALIASES = {"proposer": "proposal.method", "ss_max_side": "proposal.max_side",
                    "max_proposals": "proposal.max_proposals"}


@dataclass(frozen=True)
class DetConfig:
    # data
    data: str = ""  # VOC-format training folder (devkit layout or image + XML side by side),
    # or a COCO instances .json
    split: str = ""  # devkit ImageSets/Main/<split>.txt of `data`; empty = every annotated image
    images: str = ""  # COCO `data`: the folder its file_names are in (default: the JSON's)
    test_data: str = ""  # VOC-format folder or COCO .json evaluated after training; empty = none
    test_split: str = ""
    test_images: str = ""  # COCO `test_data`: its image folder
    classes: tuple[str, ...] = ()  # class names in label order; empty = sorted names in `data`
    output_dir: str = "runs/det"  # config.json, stage outputs, model/, eval/
    cache_dir: str = ""  # proposals and conv maps; empty = <output_dir>/cache
    max_images: int = 0  # use only the first N training images (0 = all; for quick runs)
    seed: int = 0
    # backbone
    backbone: str = "mobilenet_v2"  # "mobilenet_v2" or a `sppnet train-cls` checkpoint
    weights: str = ""  # the TFLite file for mobilenet_v2
    feature_stride: int = 16  # mobilenet_v2 map stride (16: 576 channels; 32: 1280)
    # proposals
    proposals: str = ""  # precomputed windows (.npz per image or one .npz); empty = proposed
    # by `proposal` (and cached)
    proposal: ProposalConfig = DEFAULT_PROPOSALS  # how windows are proposed (--set
    # proposal.method=edgeboxes; the earlier names proposer, max_proposals and ss_max_side too)
    workers: int = 2  # proposal worker processes
    device: str = "auto"  # the backbone and the fc head run here (auto: cuda when available);
    # caches, SVM solving and box regression stay on the CPU
    # features
    mode: str = "spp"  # spp: windows pooled from the image's conv map; rcnn: the R-CNN way
    # (each window warped with 16 px context to 224 x 224, conv net per window, same pyramid)
    scales: tuple[int, ...] = ()  # shorter sides, e.g. the paper's 688 (1 scale) or
    # 480,576,688,864,1200 (5); empty (the default) = chosen from the training boxes so that the
    # median object comes out at 224^2 (scales.auto_scales; docs/detection.md: the evidence)
    auto_scales: int = 1  # how many scales to choose when `scales` is empty
    levels: tuple[int, ...] = (6, 3, 2, 1)  # SPP section 4: the 4-level pyramid, 50 bins
    flip: bool = True  # SPP fine-tuning also uses horizontally flipped images
    cache_dtype: str = "float16"  # stored conv maps: float16 (half the disk) or float32
    # memory for what later stages reread (neither changes a result): conv maps of the training
    # images, and every window's pool5 per image (float16) when all of them fit (else windows
    # are pooled per request from the maps); the R-CNN way's window features use the latter
    map_cache_mb: int = 2048
    feature_cache_mb: int = 6144
    # fine-tuning fc6, fc7 and a new (K+1)-way fc8 on pooled windows
    fc_dim: int = 1024  # new fc6/fc7 width (a train-cls backbone keeps its own fc6/fc7)
    dropout: float = 0.5
    ft_iters: int = 3000  # SGD iterations (SPP: 250k + 50k on VOC07's 5k images)
    ft_lr: float = 1e-3  # SPP: 1e-4 for pretrained fc layers; new layers need ~10x more here
    ft_lr_step: int = 2000  # lr x0.1 after this iteration (SPP: 1e-4 then 1e-5)
    ft_momentum: float = 0.9
    ft_weight_decay: float = 5e-4
    ft_images: int = 2  # images per mini-batch (Fast R-CNN: 2)
    ft_batch: int = 128  # windows per mini-batch (R-CNN: 128)
    fg_fraction: float = 0.25  # SPP/R-CNN: 25% foreground windows
    fg_iou: float = 0.5  # foreground: IoU >= 0.5 with a ground truth (SPP)
    bg_iou_lo: float = 0.1  # background: IoU in [0.1, 0.5) (SPP)
    bg_iou_hi: float = 0.5
    # what fine-tuning trains: fc = the paper's (fc6/fc7/fc8 on pooled windows of the frozen
    # trunk); e2e = beyond the paper: the trunk's last e2e_convs convolutions with the head,
    # through the window pyramid, (K+1)-way log loss + smooth-L1 box deltas (Fast R-CNN's
    # image-centric mini-batches: ft_images images x ft_batch / ft_images windows); auto (the
    # default) = e2e in mode spp, fc in mode rcnn: end to end measured ahead of the paper's way
    # on both real sets (docs/detection.md, "End to end")
    finetune: str = "auto"
    e2e_convs: int = 10  # trunk convolutions trained end to end, counted from the last
    bbox_loss_weight: float = 1.0  # Fast R-CNN: lambda = 1
    # per-class linear SVMs with hard-negative mining (R-CNN rcnn_train.m)
    svm_layers: tuple[str, ...] = ("fc7",)  # features the SVMs read: any of pool5, fc6, fc7
    svm_C: float = 1e-3  # R-CNN: C = 10^-3
    svm_bias_mult: float = 10.0  # R-CNN: bias_mult = 10 (liblinear -B)
    svm_pos_weight: float = 2.0  # R-CNN: pos_loss_weight = 2 (liblinear -w1)
    svm_neg_iou: float = 0.3  # R-CNN: negatives have IoU < 0.3 with every gt of the class
    svm_neg_nms: float = 0.7  # SPP: a negative overlapping another negative by > 0.7 is removed
    svm_hard_thresh: float = -1.0001  # R-CNN: a negative is hard if its score > -1.0001
    svm_evict_thresh: float = -1.2  # R-CNN: cached negatives scoring < -1.2 are evicted
    svm_retrain_limit: int = 2000  # R-CNN: retrain after 2000 new hard negatives
    feat_norm_mean: float = 20.0  # R-CNN: features scaled to mean L2 norm 20
    # bounding-box regression (R-CNN appendix C) on pool5
    bbox_reg: bool = True
    bbox_iou: float = 0.5  # windows with IoU >= this train the regressor (R-CNN: 0.6)
    bbox_lambda: float = 1000.0  # ridge lambda (R-CNN: 1000; released SPP code: 4000)
    bbox_max_per_class: int = 6000  # cap on training windows per class (memory)
    # inference
    score: str = "auto"  # svm (paper), softmax (the fine-tuned fc8) or auto: svm after fc
    # fine-tuning, softmax with the head's own box deltas after e2e fine-tuning
    nms_iou: float = 0.3  # SPP/R-CNN: per-class NMS at IoU 0.3
    max_dets: int = 100  # detections kept per image

    ALIASES: ClassVar[dict[str, str]] = PROPOSAL_ALIASES

    def validate(self) -> None:
        """Each field checked, naming it and the bad value."""
        check_int_tuple("scales", self.scales, MIN_SCALE, allow_empty=True,
                        hi=MAX_DETECTION_SIDE)
        check_int("auto_scales", self.auto_scales, 1, 16)
        check_int_tuple("levels", self.levels, hi=MAX_LEVEL)
        if len(set(self.classes)) != len(self.classes):
            dup = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise ValueError(f"classes must be distinct, got {dup} more than once")
        if any(not c.strip() for c in self.classes):
            raise ValueError(f"classes must be non-empty names, got {list(self.classes)}")
        self.proposal.validate()
        self._check_numbers()
        self._check_choices()
        if not self.bg_iou_lo < self.bg_iou_hi <= self.fg_iou:
            raise ValueError("need bg_iou_lo < bg_iou_hi <= fg_iou, got "
                             f"{self.bg_iou_lo}, {self.bg_iou_hi}, {self.fg_iou}")

    def _check_numbers(self) -> None:
        for name, lo, hi in (("max_images", 0, None), ("workers", 0, MAX_WORKERS),
                             ("seed", 0, None), ("map_cache_mb", 0, None),
                             ("feature_cache_mb", 0, None), ("ft_iters", 1, None),
                             ("ft_lr_step", 1, None), ("svm_retrain_limit", 1, None),
                             ("max_dets", 1, MAX_WINDOWS), ("ft_images", 1, 64),
                             ("ft_batch", 1, MAX_BATCH), ("fc_dim", 1, MAX_FC_DIM),
                             ("bbox_max_per_class", 1, 1_000_000), ("e2e_convs", 0, None)):
            check_int(name, getattr(self, name), lo, hi)
        for name in ("ft_lr", "svm_C", "svm_bias_mult", "svm_pos_weight", "feat_norm_mean",
                     "bbox_lambda"):
            check_number(name, getattr(self, name), 0, lo_open=True)
        check_number("ft_lr", self.ft_lr, 0, 10, lo_open=True)
        for name in ("ft_momentum", "ft_weight_decay", "fg_iou", "bg_iou_lo", "bg_iou_hi",
                     "svm_neg_iou", "svm_neg_nms", "bbox_iou", "nms_iou"):
            check_number(name, getattr(self, name), 0, 1)
        check_number("svm_hard_thresh", self.svm_hard_thresh)
        check_number("svm_evict_thresh", self.svm_evict_thresh)
        check_number("dropout", self.dropout, 0, 1, hi_open=True)
        check_number("bbox_loss_weight", self.bbox_loss_weight, 0)
        check_number("fg_fraction", self.fg_fraction, 0, 1, lo_open=True)

    def _check_choices(self) -> None:
        if self.feature_stride not in (16, 32):
            raise ValueError(f"feature_stride must be 16 or 32, got {self.feature_stride}")
        bad = [x for x in self.svm_layers if x not in ("pool5", "fc6", "fc7")]
        if bad or not self.svm_layers:
            raise ValueError(f"svm_layers must be a non-empty subset of pool5, fc6, fc7; got "
                             f"{self.svm_layers}")
        for name, allowed in (("mode", ("spp", "rcnn")), ("score", ("auto", "svm", "softmax")),
                              ("finetune", ("auto", "fc", "e2e")),
                              ("cache_dtype", ("float16", "float32"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be {_one_of(allowed)}, got "
                                 f"{getattr(self, name)!r}")
        if self.finetune == "e2e" and self.mode != "spp":
            raise ValueError("finetune e2e trains the trunk through the window pyramid: it "
                             f"needs mode spp, got mode {self.mode!r}")

    def resolved_finetune(self) -> DetConfig:
        """This config with ``finetune="auto"`` made concrete: e2e where the trunk runs once
        per image (mode spp), fc for the R-CNN way (its trunk runs per window)."""
        if self.finetune != "auto":
            return self
        return dataclasses.replace(self, finetune="e2e" if self.mode == "spp" else "fc")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class InferenceSettings:
    """How a trained detector detects; stored in its ``detector.json``, changed for one run by
    ``SPPDetector.configure`` or the ``detect`` / ``eval-det`` flags."""

    scales: tuple[int, ...] = SINGLE_SCALE  # shorter sides the conv maps are computed at
    levels: tuple[int, ...] = (6, 3, 2, 1)  # the window pyramid (as trained)
    score: str = "svm"  # svm (the paper's) | softmax (the fine-tuned fc8)
    svm_layer: str = "fc7"  # which trained SVMs score windows
    bbox_reg: bool = True  # regress the boxes of the detections
    nms_iou: float = 0.3  # per-class NMS threshold (SPP/R-CNN: 0.3)
    max_dets: int = 100  # detections kept per image
    fc: str = "fp32"  # fc6/fc7 at scoring time: fp32, int8 or svd:R6,R7 (approximations)
    proposal: ProposalConfig = DEFAULT_PROPOSALS  # the proposals the detector was trained and
    # evaluated with; detect / eval-det use them
    mode: str = "spp"  # the feature source the head and SVMs were trained on (spp or rcnn)
    # box regression: "regressor" = the paper's ridge regression on pool5; "head" = the box
    # deltas the head learnt in end-to-end fine-tuning
    bbox_source: str = "regressor"
    finetune: str = "fc"  # fc (the paper's) or e2e (the trunk trained too; stored with it)

    ALIASES: ClassVar[dict[str, str]] = PROPOSAL_ALIASES

    def validate(self) -> None:
        """Each field checked, naming it (the same bounds as ``train-det``'s config)."""
        check_int_tuple("scales", self.scales, MIN_SCALE, hi=MAX_DETECTION_SIDE)
        check_int_tuple("levels", self.levels, hi=MAX_LEVEL)
        for name, allowed in (("score", ("svm", "softmax")), ("mode", ("spp", "rcnn")),
                              ("svm_layer", ("pool5", "fc6", "fc7")),
                              ("bbox_source", ("regressor", "head")),
                              ("finetune", ("fc", "e2e"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got "
                                 f"{getattr(self, name)!r}")
        if not isinstance(self.bbox_reg, bool):
            raise ValueError(f"bbox_reg must be true or false, got {self.bbox_reg!r}")
        check_number("nms_iou", self.nms_iou, 0, 1)
        check_int("max_dets", self.max_dets, 1, MAX_WINDOWS)
        self.proposal.validate()
        _check_fc(self.fc)


def fc_spec(fc: str) -> tuple[str, tuple[int, int] | None]:
    """``fp32``, ``int8`` or ``svd:R6,R7`` (fc6/fc7 at scoring time) as ``(method, (R6, R7)
    or None)``; a malformed spec raises, naming it."""
    method, _, ranks = str(fc).partition(":")
    if method == "svd":
        try:
            r6, r7 = (int(r) for r in ranks.split(","))
        except ValueError:
            raise ValueError(f"fc must look like svd:R6,R7 (e.g. svd:512,256), got "
                             f"{fc!r}") from None
        return method, (r6, r7)
    if fc not in ("fp32", "int8"):
        raise ValueError(f"fc must be fp32, int8 or svd:R6,R7, got {fc!r}")
    return method, None


def _check_fc(fc: str) -> None:
    for r in fc_spec(fc)[1] or ():
        check_int("fc svd rank", r, 1, MAX_FC_DIM)


def _one_of(allowed: tuple[str, ...]) -> str:
    return ", ".join(allowed[:-1]) + " or " + allowed[-1] if len(allowed) > 1 else allowed[0]


def inference_settings(cfg: DetConfig, svm_layers: tuple[str, ...] | list[str],
                       has_regressor: bool) -> InferenceSettings:
    """How a detector trained by ``cfg`` scores by default: ``score=auto`` is the paper's SVMs
    (with its box regression) after fc fine-tuning, and the softmax with the head's own box
    deltas after end-to-end fine-tuning (its training objective). ``svm_layers``: the layers
    SVMs were trained on; ``has_regressor``: whether the paper's box regression was."""
    e2e = cfg.finetune == "e2e"
    score = cfg.score if cfg.score != "auto" else ("softmax" if e2e else "svm")
    if score == "svm" and not svm_layers:
        score = "softmax"
    head_deltas = e2e and score == "softmax"
    return InferenceSettings(scales=tuple(cfg.scales), levels=tuple(cfg.levels), score=score,
                             svm_layer=cfg.svm_layers[-1],
                             bbox_reg=has_regressor or head_deltas,
                             bbox_source="head" if head_deltas else "regressor",
                             nms_iou=cfg.nms_iou, max_dets=cfg.max_dets, proposal=cfg.proposal,
                             mode=cfg.mode, finetune=cfg.finetune)
