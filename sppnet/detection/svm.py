"""Stage 4: one linear SVM per class with hard-negative mining (R-CNN ``rcnn_train.m``).

Shapes: R windows of an image, F feature dims, K classes.

Positives are the ground-truth boxes of the class; negatives are windows whose IoU with every
ground truth of the class is below ``svm_neg_iou`` (0.3). Features are scaled so their mean L2
norm is ``feat_norm_mean`` (20). Mining, per class (R-CNN): every negative of the first image with
negatives is added and the first SVM trained on them at once; after that a negative is added when
it scores above ``svm_hard_thresh`` (-1.0001). A negative that overlaps another (kept) negative
of the same class by more than ``svm_neg_nms`` (0.7) is removed first (SPP section 4.1). Once
more than ``svm_retrain_limit`` (2000) negatives were added the SVM is retrained and cached
negatives scoring below ``svm_evict_thresh`` (-1.2) are evicted. A final retraining follows the
pass. The solver is liblinear's L1-loss dual SVM
(R-CNN: ``-s 3``) with bias multiplier ``svm_bias_mult`` (``-B 10``) and positive weight
``svm_pos_weight`` (``-w1 2``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .config import DetConfig
from .targets import WindowSet

__all__ = ["ClassSVM", "train_svm", "mine_hard_negatives", "feature_scale"]

log = logging.getLogger(__name__)
SVM_MAX_ITER = 10_000  # liblinear iterations per training


def _distinct(boxes: np.ndarray, overlap: float) -> np.ndarray:
    """Windows left after removing those overlapping an earlier kept window by > ``overlap``."""
    import torch

    from ..ops import nms

    keep = np.zeros(len(boxes), bool)
    if overlap >= 1.0 or len(boxes) == 0:
        keep[:] = True
        return keep
    b = torch.from_numpy(np.asarray(boxes, np.float32))
    keep[nms(b, -torch.arange(len(b), dtype=torch.float32), overlap).numpy()] = True
    return keep


def feature_scale(samples: Iterable[np.ndarray], target: float) -> float:
    """``target / mean L2 norm`` over sample feature rows (R-CNN ``rcnn_feature_stats``)."""
    norms = np.concatenate([np.linalg.norm(s, axis=1) for s in samples])
    mean = float(norms.mean()) if len(norms) else 0.0
    return target / mean if mean > 0 else 1.0


def train_svm(pos: np.ndarray, neg: np.ndarray, cfg: DetConfig) -> tuple[np.ndarray, float]:
    """``(w (F,), b)`` of a liblinear L1-loss SVM on already scaled features."""
    from sklearn.svm import LinearSVC

    x = np.concatenate([pos, neg]).astype(np.float32)
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.int64)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"an SVM needs positives and negatives, got {len(pos)} and {len(neg)}")
    svm = LinearSVC(C=cfg.svm_C, loss="hinge", dual=True, class_weight={1: cfg.svm_pos_weight},
                    intercept_scaling=cfg.svm_bias_mult, max_iter=SVM_MAX_ITER,
                    random_state=cfg.seed)  # liblinear shuffles: seeded, so runs repeat
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(x, y)
    return svm.coef_[0].astype(np.float32), float(svm.intercept_[0])


@dataclass
class ClassSVM:
    """One class's model and its negative cache (R-CNN ``cache``)."""

    dim: int
    w: np.ndarray | None = None
    b: float = 0.0
    neg: list[np.ndarray] = field(default_factory=list)
    neg_keys: set = field(default_factory=set)
    added: int = 0
    trained: bool = False
    retrains: int = 0

    def scores(self, x: np.ndarray) -> np.ndarray:
        return x @ self.w + self.b if self.w is not None else np.zeros(len(x), np.float32)

    def negatives(self) -> np.ndarray:
        return np.concatenate(self.neg) if self.neg else np.zeros((0, self.dim), np.float32)

    def retrain(self, pos: np.ndarray, cfg: DetConfig) -> None:
        neg = self.negatives()
        self.w, self.b = train_svm(pos, neg, cfg)
        s = neg @ self.w + self.b
        keep = s >= cfg.svm_evict_thresh
        keys = list(self._key_order)
        self.neg = [neg[keep]] if keep.any() else []
        self._key_order = [k for k, kp in zip(keys, keep) if kp]
        self.neg_keys = set(self._key_order)
        self.added = 0
        self.trained = True
        self.retrains += 1

    def add(self, x: np.ndarray, keys: list) -> None:
        new = [i for i, k in enumerate(keys) if k not in self.neg_keys]
        if not new:
            return
        self.neg.append(x[new])
        for i in new:
            self.neg_keys.add(keys[i])
            self._key_order.append(keys[i])
        self.added += len(new)

    def __post_init__(self) -> None:
        self._key_order: list = []


def mine_hard_negatives(windows: Sequence[WindowSet],
                        features: Callable[[int, np.ndarray | None], np.ndarray],
                        num_classes: int,
                        cfg: DetConfig, progress: bool = True) -> list[ClassSVM]:
    """Train the K SVMs in one hard-negative pass over the images.

    Args:
        windows: labelled windows per image (ground truth first).
        features: ``features(i, rows) -> (len(rows), F)`` scaled features of image i's windows
            (``rows=None``: all of them).
    """
    from tqdm import tqdm

    pos: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    models: list[ClassSVM] = []
    # positives first (R-CNN: get_positive_pool), kept for every retraining
    first = None
    for i, ws in enumerate(windows):
        if ws.n_gt == 0:
            continue
        x = features(i, np.arange(ws.n_gt))  # ground-truth rows only
        first = x.shape[1]
        for k in range(num_classes):
            rows = np.nonzero(ws.gt_label[: ws.n_gt] == k)[0]  # a gt row matches itself
            if len(rows):
                pos[k].append(x[rows])
    if first is None:
        raise ValueError("no ground-truth boxes in the training images: nothing to train on")
    pos_x = [np.concatenate(p) if p else np.zeros((0, first), np.float32) for p in pos]
    models = [ClassSVM(first) for _ in range(num_classes)]
    for i, ws in enumerate(tqdm(windows, desc="SVM hard negatives", disable=not progress)):
        if len(ws.boxes) == 0:
            continue
        x = features(i, None)  # (R, F)
        for k, m in enumerate(models):
            if len(pos_x[k]) == 0:
                continue
            cand = np.nonzero(ws.class_iou[:, k] < cfg.svm_neg_iou)[0]  # this class's negatives
            # SPP 4.1: a negative overlapping another negative *of this class* by > 0.7 goes
            idx = cand[_distinct(ws.boxes[cand], cfg.svm_neg_nms)]
            if m.trained:
                idx = idx[m.scores(x[idx]) > cfg.svm_hard_thresh]
            m.add(x[idx], [(i, int(j)) for j in idx])
            # R-CNN rcnn_train.m: the first SVM is trained right after the first image's
            # negatives, then only hard ones are added; retrain after svm_retrain_limit more
            if (not m.trained and m.neg) or m.added > cfg.svm_retrain_limit:
                m.retrain(pos_x[k], cfg)
    for k, m in enumerate(models):
        if len(pos_x[k]) == 0:
            log.warning("class %d has no positives; its SVM scores everything -inf", k)
            m.w, m.b = np.zeros(first, np.float32), -np.inf
            continue
        if m.added or not m.trained:
            if not m.neg:
                raise ValueError(f"class {k} has no negatives (every window overlaps it)")
            m.retrain(pos_x[k], cfg)
        log.info("SVM %d: %d positives, %d cached negatives, %d trainings", k, len(pos_x[k]),
                 len(m.negatives()), m.retrains)
    return models
