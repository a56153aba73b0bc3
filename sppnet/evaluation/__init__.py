"""Evaluation: VOC detection AP (devkit rules) and top-k accuracy."""

from .topk import topk_correct
from .voc import VOCEvaluator, eval_class, read_devkit_results, voc_ap, write_devkit_results

__all__ = ["VOCEvaluator", "eval_class", "read_devkit_results", "topk_correct", "voc_ap",
           "write_devkit_results"]
