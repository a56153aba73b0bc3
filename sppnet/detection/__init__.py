"""SPP-net detection, one module per pipeline stage (in order):

``proposals`` (Selective Search, cached) -> ``features`` (conv maps once per image and scale,
cached; windows pooled on the fly) -> ``targets`` (windows labelled against the ground truth) ->
``finetune`` (fc6/fc7/fc8 on pooled windows) -> ``svm`` (per-class SVMs, hard negatives) ->
``bbox_reg`` (ridge box regression on pool5) -> ``detector`` (score, regress, NMS) ->
``evaluate`` (VOC mAP, pictures). ``rcnn`` is the R-CNN baseline (a conv pass per window),
``combine`` merges two detectors, ``train`` runs the stages with resume.
"""

from .config import DetConfig
from .detector import Detections, InferenceSettings, SPPDetector, load_detector
from .evaluate import evaluate_detector
from .features import BackboneSpec, ConvMapCache, pool_windows, select_scales
from .proposals import ProposalConfig, compute_proposals, jitter_boxes, selective_search
from .train import train_detector

__all__ = ["load_detector", "BackboneSpec", "ConvMapCache", "DetConfig", "Detections",
           "InferenceSettings",
           "ProposalConfig", "SPPDetector", "compute_proposals", "evaluate_detector",
           "jitter_boxes", "pool_windows", "select_scales", "selective_search", "train_detector"]
