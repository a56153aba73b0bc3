"""Evaluation: top-k accuracy (and, later, VOC mAP)."""

from .topk import topk_correct

__all__ = ["topk_correct"]
