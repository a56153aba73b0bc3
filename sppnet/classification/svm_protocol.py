"""Linear SVMs on fixed features: the Caltech-101 protocol (paper Sec. 3.2).

Per split: ``n_train`` random training images per class (30), up to ``n_test`` of the rest (50)
for testing; one-vs-rest linear SVMs (scikit-learn's ``LinearSVC``, i.e. liblinear) with ``C``
chosen by cross-validation on the training images only; the score is the mean per-class
accuracy. Repeated over ``n_splits`` seeded splits (paper: 10): mean and standard deviation.
A class with fewer than ``n_train + 1`` usable images trains on all but one and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

__all__ = ["caltech_splits", "mean_per_class_accuracy", "row_space", "fit_predict", "choose_c",
           "run_protocol"]

log = logging.getLogger(__name__)
C_GRID = (0.1, 1.0, 10.0)  # searched on the training images of each split


def caltech_splits(labels: np.ndarray, n_train: int = 30, n_test: int = 50, n_splits: int = 10,
                   seed: int = 0, usable: np.ndarray | None = None
                   ) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[int, int]]:
    """Seeded splits ``[(train_idx, test_idx), ...]`` and ``{class: train images}`` for the
    classes that had fewer than ``n_train + 1`` usable images."""
    usable = np.ones(len(labels), bool) if usable is None else usable
    classes = np.unique(labels[usable])
    short: dict[int, int] = {}
    splits = []
    for k in range(n_splits):
        rng = np.random.default_rng([seed, k])
        tr, te = [], []
        for c in classes:
            idx = np.flatnonzero((labels == c) & usable)
            idx = idx[rng.permutation(len(idx))]
            n = min(n_train, len(idx) - 1)
            if n < n_train:
                short[int(c)] = n
            tr.append(idx[:n])
            te.append(idx[n:n + n_test])
        splits.append((np.concatenate(tr), np.concatenate(te)))
    return splits, short


def mean_per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    accs = [np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]
    return float(np.mean(accs))


def _svm(c: float):
    from sklearn.svm import LinearSVC

    # liblinear, one-vs-rest; it shuffles the samples, so the seed makes runs repeat
    return LinearSVC(C=c, dual=True, max_iter=5000, random_state=0)


def row_space(x_train: np.ndarray, *others: np.ndarray, rtol: float = 1e-9
              ) -> tuple[np.ndarray, ...]:
    """Coordinates of ``x_train (n, d)`` and of ``others (m, d)`` in an orthonormal basis of the
    training rows' span, when ``d > n`` (else the inputs unchanged).

    A linear SVM's weight vector lies in that span (representer theorem; liblinear's bias
    feature is appended to both sides alike), and the basis is orthonormal, so training and
    scoring on the ``(·, r)`` coordinates, ``r <= n``, solves the *same* problem with a
    ``d/r``-times cheaper solver. The basis comes from the Gram matrix ``X Xᵀ = U S² Uᵀ``:
    training rows map to ``U S`` and any other row ``x`` to ``x Xᵀ U S⁻¹``.
    """
    n, d = x_train.shape
    if d <= n:
        return (x_train, *others)
    xt = np.asarray(x_train, np.float64)
    evals, u = np.linalg.eigh(xt @ xt.T)
    keep = evals > rtol * max(float(evals.max()), 1e-300)
    s = np.sqrt(evals[keep])
    u = u[:, keep]
    proj = u / s  # (n, r): x ↦ (x Xᵀ) proj
    return (u * s, *[(np.asarray(o, np.float64) @ xt.T) @ proj for o in others])


def fit_predict(c: float, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray
                ) -> np.ndarray:
    """One-vs-rest linear SVM with ``C = c`` trained on ``(x_train, y_train)``; labels of
    ``x_test``. Solved in the training rows' span (:func:`row_space`), which is exact."""
    z_train, z_test = row_space(x_train, x_test)
    return _svm(c).fit(z_train, y_train).predict(z_test)


def choose_c(x: np.ndarray, y: np.ndarray, grid: Sequence[float] = C_GRID, folds: int = 3,
             seed: int = 0) -> float:
    """``C`` with the best cross-validated mean per-class accuracy on ``(x, y)``."""
    if len(grid) == 1:
        return float(grid[0])
    if len(y) and int(np.bincount(y)[np.unique(y)].min()) < 2:
        raise ValueError(f"cross-validating C over {list(grid)} needs at least 2 training images "
                         "per class; raise --train-per-class or give one --c-grid value")
    from sklearn.model_selection import StratifiedKFold

    n_folds = max(2, min(folds, int(np.bincount(y).min()) if len(y) else 2))
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    scores = []
    for c in grid:
        accs = []
        for tr, va in cv.split(x, y):
            accs.append(mean_per_class_accuracy(y[va], fit_predict(c, x[tr], y[tr], x[va])))
        scores.append(float(np.mean(accs)))
    return float(grid[int(np.argmax(scores))])


def run_protocol(x: np.ndarray, labels: np.ndarray, n_train: int = 30, n_test: int = 50,
                 n_splits: int = 10, seed: int = 0, c_grid: Sequence[float] = C_GRID,
                 usable: np.ndarray | None = None, progress: bool = True,
                 cv_folds: int = 3) -> dict:
    """The protocol on features ``x (N, D)``; returns a JSON-ready dict with ``mean_accuracy``,
    ``std_accuracy``, ``per_split`` and a summed ``confusion`` matrix."""
    from tqdm import tqdm

    splits, short = caltech_splits(labels, n_train, n_test, n_splits, seed, usable)
    if short:
        log.warning("%d class(es) have fewer than %d usable images and train on all but one: %s",
                    len(short), n_train + 1, short)
    k = int(labels.max()) + 1
    confusion = np.zeros((k, k), dtype=np.int64)
    per_split = []
    for i, (tr, te) in enumerate(tqdm(splits, desc="svm splits", disable=not progress,
                                      leave=False)):
        c = choose_c(x[tr], labels[tr], c_grid, folds=cv_folds, seed=seed + i)
        pred = fit_predict(c, x[tr], labels[tr], x[te])
        np.add.at(confusion, (labels[te], pred), 1)
        per_split.append({"split": i, "C": c, "accuracy": mean_per_class_accuracy(labels[te], pred),
                          "train": int(len(tr)), "test": int(len(te))})
    accs = [s["accuracy"] for s in per_split]
    return {"mean_accuracy": float(np.mean(accs)),
            "std_accuracy": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
            "per_split": per_split, "short_classes": {str(a): b for a, b in short.items()},
            "confusion": confusion.tolist()}
