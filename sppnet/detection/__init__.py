"""SPP-net detection, one module per pipeline stage (in order):

``proposals`` (Selective Search, EdgeBoxes; cached and computed in worker processes by
``proposal_cache``) -> ``features`` (conv maps once per image and scale, cached; windows pooled
on the fly) -> ``targets`` (windows labelled against the ground truth) -> ``finetune`` (fc6/fc7/fc8
on pooled windows; ``e2e``: the trunk too) -> ``svm`` (per-class SVMs, hard negatives) ->
``bbox_fit`` (ridge box regression on pool5) -> ``detector`` (the trained parts: ``head``,
SVMs, ``bbox_reg``; its files in ``detector_files``) -> ``run`` (the one loop that takes images to
detections: decode, propose, conv maps, pool, score, regress, NMS) -> ``evaluate`` (VOC mAP,
pictures). ``rcnn`` is the R-CNN baseline (a conv pass per window), ``export`` the detector as
one ONNX graph, ``train`` runs the training stages with resume; ``config`` holds the settings.

The names below load their module when first used: importing the detector (inference) loads no
training module.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "DetConfig": "config", "InferenceSettings": "config", "ProposalConfig": "config",
    "SPPDetector": "detector", "load_detector": "detector", "Detections": "run",
    "evaluate_detector": "evaluate", "BackboneSpec": "features", "ConvMapCache": "features",
    "pool_windows": "features", "select_scales": "features",
    "compute_proposals": "proposal_cache", "selective_search": "proposals",
    "train_detector": "train",
}
_ELSEWHERE = {"jitter_boxes": "sppnet.data.synthetic"}  # a helper for tests and examples

__all__ = sorted([*_EXPORTS, *_ELSEWHERE])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    elif name in _ELSEWHERE:
        module = importlib.import_module(_ELSEWHERE[name])
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
