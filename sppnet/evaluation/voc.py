"""PASCAL VOC detection AP, as the devkit computes it.

Boxes here are in the devkit's pixel convention when ``plus_one=True`` (the default for VOC pixel
data): 1-based inclusive ``(x1, y1, x2, y2)`` with widths ``x2 - x1 + 1``. sppnet's continuous
0-based boxes convert with :func:`to_devkit` (``x1 + 1, y1 + 1, x2, y2``), which keeps every
width and IoU unchanged. ``plus_one=False`` treats boxes as continuous.

Rules (VOC devkit ``VOCevaldet.m``): detections of a class sorted by decreasing score (ties keep
their input order); a detection is a true positive when its best-overlapping ground truth in the
same image has IoU >= the threshold, is not ``difficult`` and is not yet taken; a second detection
of a taken object is a false positive; a best match that is ``difficult`` counts as neither.
Recall is over non-difficult objects. AP is VOC2007's 11-point interpolation by default
(``use_07_metric=True``) or the area under the monotone precision envelope (VOC2010+).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["voc_ap", "eval_class", "VOCEvaluator", "to_devkit", "from_devkit", "iou_matrix",
           "read_devkit_results", "write_devkit_results", "plot_pr_curves", "class_file_name",
           "VOC07_RECALL_THRESHOLDS"]

# The devkit's ``t = 0:0.1:1`` in MATLAB. Its colon operator builds the upper half from the end
# point, so the values are these exact doubles (0.3 is 0.30000000000000004, 0.6 and 0.7 exact),
# unlike ``np.arange(0, 1.1, 0.1)`` (0.6000000000000001, 0.7000000000000001), which misses a
# recall of exactly 0.6 or 0.7.
VOC07_RECALL_THRESHOLDS = (0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9,
                           1.0)


def class_file_name(prefix: str, name: str) -> str:
    """``<prefix><name>.txt`` with the class name percent-encoded where it is not a plain file
    name character (``../x`` -> ``..%2Fx``), so any class name is a safe, reversible name."""
    from urllib.parse import quote

    return f"{prefix}{quote(name, safe='')}.txt"


def _encode_id(image_id: str) -> str:
    """Image ids go into space-separated devkit lines: ``%`` and whitespace are escaped."""
    return "".join(f"%{ord(ch):02X}" if ch == "%" or ch.isspace() else ch for ch in image_id)


def _decode_id(token: str) -> str:
    from urllib.parse import unquote

    return unquote(token) if "%" in token else token


def to_devkit(boxes: np.ndarray) -> np.ndarray:
    """Continuous 0-based ``xyxy`` -> the devkit's 1-based inclusive pixels."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    b[:, :2] += 1.0
    return b


def from_devkit(boxes: np.ndarray) -> np.ndarray:
    """The devkit's 1-based inclusive pixels -> continuous 0-based ``xyxy`` (inverse of
    :func:`to_devkit`)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    b[:, :2] -= 1.0
    return b


def iou_matrix(a: np.ndarray, b: np.ndarray, plus_one: bool = True) -> np.ndarray:
    """IoU of ``a (N, 4)`` against ``b (M, 4)`` -> ``(N, M)``; ``+1`` widths if ``plus_one``."""
    e = 1.0 if plus_one else 0.0
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + e
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + e
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_a = (a[:, 2] - a[:, 0] + e) * (a[:, 3] - a[:, 1] + e)
    area_b = (b[:, 2] - b[:, 0] + e) * (b[:, 3] - b[:, 1] + e)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """AP from a PR curve: 11-point (VOC2007) or all-point (area under the envelope)."""
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if use_07_metric:
        ap = 0.0
        for t in VOC07_RECALL_THRESHOLDS:
            p = precision[recall >= t].max() if (recall >= t).any() else 0.0
            ap += p / 11.0
        return float(ap)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


@dataclass
class ClassResult:
    ap: float
    recall: np.ndarray
    precision: np.ndarray
    n_pos: int
    n_det: int


def eval_class(gts: dict[str, tuple[np.ndarray, np.ndarray]],
               dets: Sequence[tuple[str, float, np.ndarray]], iou_threshold: float = 0.5,
               use_07_metric: bool = True, plus_one: bool = True) -> ClassResult:
    """AP of one class.

    Args:
        gts: ``{image_id: (boxes (G, 4), difficult (G,) bool)}`` of this class.
        dets: ``(image_id, score, box (4,))`` detections of this class, any order.
    """
    n_pos = int(sum((~np.asarray(d, bool)).sum() for _, d in gts.values()))
    taken = {i: np.zeros(len(b), bool) for i, (b, _) in gts.items()}
    scores = np.array([d[1] for d in dets], np.float64)
    order = np.argsort(-scores, kind="stable")
    tp = np.zeros(len(dets))
    fp = np.zeros(len(dets))
    for rank, j in enumerate(order):
        image_id, _, box = dets[j]
        gt_boxes, difficult = gts.get(image_id, (np.zeros((0, 4)), np.zeros(0, bool)))
        if len(gt_boxes) == 0:
            fp[rank] = 1
            continue
        ious = iou_matrix(np.asarray(box)[None], gt_boxes, plus_one)[0]
        k = int(np.argmax(ious))
        if ious[k] >= iou_threshold:
            if difficult[k]:
                continue  # neither TP nor FP
            if not taken[image_id][k]:
                tp[rank] = 1
                taken[image_id][k] = True
            else:
                fp[rank] = 1  # a duplicate
        else:
            fp[rank] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / n_pos if n_pos else np.zeros_like(tp)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = voc_ap(recall, precision, use_07_metric) if n_pos else float("nan")
    return ClassResult(ap, recall, precision, n_pos, len(dets))


@dataclass
class VOCEvaluator:
    """detectron2-style ``reset / process / evaluate`` over images.

    Boxes given to :meth:`process` use the convention selected by ``plus_one`` (see module
    docstring)."""

    classes: Sequence[str]
    iou_threshold: float = 0.5
    use_07_metric: bool = True
    plus_one: bool = True
    _gts: dict = field(default_factory=dict, repr=False)
    _dets: dict = field(default_factory=dict, repr=False)

    def reset(self) -> None:
        self._gts, self._dets = {}, {}

    def process(self, image_id: str, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                gt_difficult: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                labels: np.ndarray) -> None:
        if image_id in self._gts:
            raise ValueError(f"image {image_id!r} was processed twice")
        gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        gt_labels = np.asarray(gt_labels).reshape(-1)
        gt_difficult = np.asarray(gt_difficult, bool).reshape(-1)
        self._gts[image_id] = (gt_boxes, gt_labels, gt_difficult)
        self._dets[image_id] = (np.asarray(boxes, np.float64).reshape(-1, 4),
                                np.asarray(scores, np.float64).reshape(-1),
                                np.asarray(labels).reshape(-1))

    def class_results(self) -> dict[str, ClassResult]:
        out = {}
        for c, name in enumerate(self.classes):
            gts = {i: (b[lab == c], d[lab == c]) for i, (b, lab, d) in self._gts.items()}
            dets = [(i, float(s), box) for i, (bx, sc, lab) in self._dets.items()
                    for box, s in zip(bx[lab == c], sc[lab == c])]
            out[name] = eval_class(gts, dets, self.iou_threshold, self.use_07_metric,
                                   self.plus_one)
        return out

    def evaluate(self) -> dict:
        res = self.class_results()
        aps = {k: v.ap for k, v in res.items()}
        valid = [v for v in aps.values() if not np.isnan(v)]
        return {"mAP": float(np.mean(valid)) if valid else float("nan"),
                "per_class_AP": aps, "iou_threshold": self.iou_threshold,
                "metric": "voc07_11point" if self.use_07_metric else "all_point",
                "plus_one": self.plus_one, "images": len(self._gts),
                "positives": {k: v.n_pos for k, v in res.items()},
                "detections": {k: v.n_det for k, v in res.items()}}


def write_devkit_results(out_dir: str | Path, classes: Sequence[str],
                         detections: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                         prefix: str = "comp4_det_test_") -> list[Path]:
    """Devkit result files ``<prefix><class>.txt``: lines ``image_id score x1 y1 x2 y2`` in
    1-based pixels, from ``(image_id, boxes (continuous xyxy), scores, labels)`` tuples.
    Class names are percent-encoded in file names (:func:`class_file_name`), and ``%`` and
    whitespace in image ids (:func:`read_devkit_results` decodes them)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines: dict[int, list[str]] = {c: [] for c in range(len(classes))}
    for image_id, boxes, scores, labels in detections:
        for b, s, lab in zip(to_devkit(boxes), np.asarray(scores), np.asarray(labels)):
            lines[int(lab)].append(f"{_encode_id(image_id)} {s:.6f} {b[0]:.1f} {b[1]:.1f} "
                                   f"{b[2]:.1f} "
                                   f"{b[3]:.1f}")
    paths = []
    for c, name in enumerate(classes):
        p = out_dir / class_file_name(prefix, name)
        p.write_text("".join(ln + "\n" for ln in lines[c]))
        paths.append(p)
    return paths


def read_devkit_results(path: str | Path) -> list[tuple[str, float, np.ndarray]]:
    """One devkit result file -> ``(image_id, score, box)`` in its 1-based pixels."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise ValueError(f"{path}:{n}: expected 'image_id score x1 y1 x2 y2', got {line!r}")
        try:
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            raise ValueError(f"{path}:{n}: non-numeric value in {line!r}") from None
        if not all(np.isfinite(vals)):
            raise ValueError(f"{path}:{n}: non-finite value in {line!r}")
        out.append((_decode_id(parts[0]), vals[0], np.array(vals[1:], np.float64)))
    return out


def plot_pr_curves(results: dict[str, ClassResult], path: str | Path, title: str = "") -> None:
    from ..utils.plotting import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=110)
    for name, r in results.items():
        if r.n_pos:
            ax.plot(r.recall, r.precision, label=f"{name} (AP {100 * r.ap:.1f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
