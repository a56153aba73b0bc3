"""Reading ``sppnet detect``'s ``detections.json``: ``{image_id: {boxes, scores, names or
labels}}`` with continuous ``xyxy`` boxes, checked entry by entry (a malformed one names the file
and the image)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["read_detections_json"]


def read_detections_json(path: str | Path, classes: list[str] | None = None) -> dict:
    """``{image_id: (boxes (R, 4) continuous xyxy, scores (R,), class names)}``. Entries with
    ``labels`` but no ``names`` need ``classes`` (the detector's label order)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--detections {path} is not valid JSON: {e}") from None
    except RecursionError:  # nesting deeper than any detections file
        raise ValueError(f"--detections {path} is nested too deeply to be a detections "
                         "file") from None
    if not isinstance(data, dict):
        raise ValueError(f"--detections {path}: expected a JSON object of image id -> "
                         f"detections, got {type(data).__name__}")
    return {str(i): _json_entry(path, str(i), d, classes) for i, d in data.items()}


def _json_entry(path: Path, image_id: str, d: object, classes: list[str] | None):
    """One image's detections from detections.json -> ``(boxes (continuous), scores,
    class names)``; raises naming the file and the image when malformed."""
    where = f"--detections {path}, image {image_id!r}"
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object with boxes/scores/labels, got "
                         f"{type(d).__name__}")
    missing = [k for k in ("boxes", "scores") if k not in d]
    if "labels" not in d and "names" not in d:
        missing.append("labels (or names)")
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    try:
        boxes = np.asarray(d["boxes"], np.float64)
        scores = np.asarray(d["scores"], np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: boxes and scores must be numbers ({e})") from None
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}: boxes must be a list of [x1, y1, x2, y2], got shape "
                         f"{boxes.shape}")
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError(f"{where}: boxes and scores must be finite")
    flipped = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if len(flipped):
        raise ValueError(f"{where}: box {int(flipped[0])} {boxes[flipped[0]].tolist()} has "
                         "x2 < x1 or y2 < y1 (boxes are [x1, y1, x2, y2])")
    if "names" in d:
        if not isinstance(d["names"], list) or not all(isinstance(n, str) for n in d["names"]):
            raise ValueError(f"{where}: names must be a list of class names (strings)")
        names = list(d["names"])
    else:  # labels alone are indices into the detector's classes: they need --classes
        if classes is None:
            raise ValueError(f"{where}: labels without names are indices into the detector's "
                             "classes; give --classes in its label order")
        try:
            labels = [int(v) for v in d["labels"]]
        except (TypeError, ValueError):
            raise ValueError(f"{where}: labels must be integers") from None
        bad = [v for v in labels if not 0 <= v < len(classes)]
        if bad:
            raise ValueError(f"{where}: label {bad[0]} is not an index into --classes")
        names = [classes[v] for v in labels]
    if not len(boxes) == len(scores) == len(names):
        raise ValueError(f"{where}: {len(boxes)} boxes, {len(scores)} scores and "
                         f"{len(names)} labels")
    return boxes, scores, names
