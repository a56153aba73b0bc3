"""Run an SPP-net detector exported by ``sppnet export`` without PyTorch or sppnet.

Needs only ``onnxruntime``, ``numpy``, ``Pillow`` and OpenCV (``opencv-contrib-python-headless``,
for Selective Search)::

    python docs/onnx_runner.py det.onnx photo.jpg [more.jpg ...] [--proposals windows.npz]
        [--output detections.json]

``det.json`` (written beside ``det.onnx``) holds the classes, the scale, the normalisation and the
proposal and NMS settings. Per image the runner

1. decodes the photo to RGB ``uint8`` (EXIF orientation applied, transparency on white);
2. finds windows with OpenCV's Selective Search with the detector's settings, in sppnet's
   canonical order (or takes them from ``--proposals``: one ``.npz`` with an ``(R, 4)`` array per
   image file stem) and drops windows of zero width or height;
3. resizes the image so its shorter side is the scale (the longer at most ``max_long_side``),
   Pillow bilinear, and normalises it as ``(pixel - mean) * input_scale`` (each one number or
   one per channel, R, G, B), channels first —
   once per scale for a multi-scale detector;
4. runs the graph: per-class ``scores (R, K)`` and regressed, clipped ``boxes (R, K, 4)``;
5. per-class greedy NMS in float64 (a box goes when its IoU with a kept box of its class is above
   ``nms_iou``; equal scores are visited in window order), the ``max_dets`` best kept.

The detections are the ones ``sppnet detect`` gives on the same windows (``docs/export.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

FORMAT = "sppnet-onnx-detector-1"


# ------------------------------------------------------------------------------- images

def decode(path: str | Path) -> np.ndarray:
    """An RGB ``(H, W, 3)`` uint8 array: EXIF orientation applied, transparency on white."""
    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba)
        return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def scaled_size(image_size: tuple[int, int], scale: int, max_long_side: int) -> tuple[int, int]:
    """``(H', W')``: the shorter side ``scale``, the longer at most ``max_long_side``."""
    h, w = image_size
    f = min(scale / min(h, w), max_long_side / max(h, w))
    return max(1, round(h * f)), max(1, round(w * f))


def preprocess(image: np.ndarray, cfg: dict) -> list[np.ndarray]:
    """The graph's image inputs, one ``(1, 3, H', W')`` float32 array per scale."""
    out = []
    for scale in cfg["scales"]:
        h, w = scaled_size(image.shape[:2], scale, cfg["max_long_side"])
        resized = image if image.shape[:2] == (h, w) else np.asarray(
            Image.fromarray(image).resize((w, h), Image.BILINEAR))
        # mean and input_scale: one number, or one per channel (R, G, B)
        x = (resized.astype(np.float32) - np.asarray(cfg["mean"], np.float32)) * np.asarray(
            cfg["input_scale"], np.float32)
        out.append(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
    return out


# ------------------------------------------------------------------------------- proposals

def canonical_windows(boxes: np.ndarray, max_proposals: int) -> np.ndarray:
    """Distinct windows sorted by ``(x1, y1, x2, y2)``; above ``max_proposals``, an evenly
    spaced subset of them ranked by area (OpenCV's own order is random from run to run)."""
    b = np.unique(np.asarray(boxes, np.float32).reshape(-1, 4), axis=0)
    if len(b) > max_proposals:
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        by_area = np.argsort(-area, kind="stable")
        pick = np.unique(np.linspace(0, len(b) - 1, max_proposals).round().astype(np.int64))
        b = b[np.sort(by_area[pick])]
    return b


def selective_search(image: np.ndarray, p: dict) -> np.ndarray:
    """OpenCV Selective Search windows ``(R, 4)`` float32 xyxy in the image's pixels, with the
    detector's settings ``p`` (method, max_side, max_proposals, max_aspect, min_size)."""
    import cv2

    if p["method"] not in ("selective_search_fast", "selective_search_quality"):
        raise ValueError(f"this runner computes Selective Search windows; the detector uses "
                         f"{p['method']!r}: give the windows (--proposals)")
    h, w = image.shape[:2]
    s = min(1.0, p["max_side"] / max(h, w))
    img = image if s >= 1.0 else cv2.resize(
        image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    sh, sw = img.shape[:2]
    # OpenCV fails on elongated images: pad bottom/right with the mean colour to max_aspect
    ph = max(0, int(np.ceil(sw / p["max_aspect"])) - sh)
    pw = max(0, int(np.ceil(sh / p["max_aspect"])) - sw)
    if ph or pw:
        padded = np.empty((sh + ph, sw + pw, 3), np.uint8)
        padded[:] = img.reshape(-1, 3).mean(0).astype(np.uint8)
        padded[:sh, :sw] = img
        img = padded
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(img[:, :, ::-1]))  # BGR
    if p["method"] == "selective_search_fast":
        ss.switchToSelectiveSearchFast()
    else:
        ss.switchToSelectiveSearchQuality()
    rects = np.asarray(ss.process(), np.float64).reshape(-1, 4)  # (x, y, w, h)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], 1)
    boxes = np.minimum(boxes, [sw, sh, sw, sh]) / np.array([sw / w, sh / h, sw / w, sh / h])
    boxes = np.clip(boxes, 0, [w, h, w, h])
    keep = ((boxes[:, 2] - boxes[:, 0]) >= p["min_size"]) & (
        (boxes[:, 3] - boxes[:, 1]) >= p["min_size"])
    return canonical_windows(boxes[keep].astype(np.float32), p["max_proposals"])


def usable(boxes: np.ndarray) -> np.ndarray:
    """Windows with positive width and height and finite coordinates (the graph's input)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    ok = np.isfinite(b).all(1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return b[ok]


# ------------------------------------------------------------------------------- NMS

def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                thr: float) -> np.ndarray:
    """Greedy NMS within each label; kept indices by decreasing score (ties: lower label,
    then lower index, first). IoU in float64; a box goes when its IoU is above ``thr``."""
    s = -scores.astype(np.float64)
    order = np.lexsort((np.arange(len(s)), s, labels))  # label, then -score, then index
    b = boxes.astype(np.float64)[order]
    lab = labels[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    bounds = [0, *(np.flatnonzero(np.diff(lab)) + 1).tolist(), len(b)]  # one run per label
    alive = np.ones(len(b), bool)
    keep = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        for i in range(lo, hi):
            if not alive[i]:
                continue
            keep.append(i)
            rest = np.nonzero(alive[i + 1:hi])[0] + i + 1
            if rest.size == 0:
                break
            iw = np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0])
            ih = np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1])
            inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
            union = area[i] + area[rest] - inter
            iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
            alive[rest[iou > thr]] = False
    kept = order[np.asarray(keep, np.int64)]
    return kept[np.argsort(s[kept], kind="stable")]


# ------------------------------------------------------------------------------- the runner

class Runner:
    """An exported detector: ``Runner("det.onnx").detect(image)``."""

    def __init__(self, onnx_path: str | Path, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        onnx_path = Path(onnx_path)
        self.cfg = json.loads(onnx_path.with_suffix(".json").read_text())
        if self.cfg.get("format") != FORMAT:
            raise ValueError(f"{onnx_path.with_suffix('.json')} is not an sppnet ONNX detector "
                             f"description (format {self.cfg.get('format')!r})")
        self.classes = self.cfg["classes"]
        self.session = ort.InferenceSession(str(onnx_path),
                                            providers=providers or ["CPUExecutionProvider"])

    def raw(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph's outputs for usable windows: ``scores (R, K)``, ``boxes (R, K, 4)``."""
        names = self.cfg["inputs"]  # the images (one per scale), "boxes", "image_size"
        feed = dict(zip(names[:-2], preprocess(image, self.cfg)))
        feed.update({"boxes": boxes, "image_size": np.asarray(image.shape[:2], np.int64)})
        scores, cand = self.session.run(None, feed)
        return scores, cand

    def detect(self, image: np.ndarray, boxes: np.ndarray | None = None) -> dict:
        """Detections of an RGB uint8 image: ``boxes (M, 4)`` xyxy pixels, ``scores``,
        ``labels`` (class indices) and ``names``. ``boxes``: the windows (default: Selective
        Search with the detector's settings)."""
        if boxes is None:
            boxes = selective_search(image, self.cfg["proposals"])
        boxes = usable(boxes)
        k = len(self.classes)
        if len(boxes) == 0:
            return {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
                    "labels": np.zeros(0, np.int64), "names": []}
        scores, cand = self.raw(image, boxes)
        flat_scores = scores.reshape(-1)
        flat_boxes = cand.reshape(-1, 4)
        labels = np.tile(np.arange(k), len(boxes))
        ok = np.isfinite(flat_scores)
        flat_scores, flat_boxes, labels = flat_scores[ok], flat_boxes[ok], labels[ok]
        keep = batched_nms(flat_boxes, flat_scores, labels, self.cfg["nms_iou"])
        keep = keep[:self.cfg["max_dets"]]
        return {"boxes": flat_boxes[keep], "scores": flat_scores[keep], "labels": labels[keep],
                "names": [self.classes[int(i)] for i in labels[keep]]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="the .onnx file written by sppnet export")
    ap.add_argument("images", type=Path, nargs="+")
    ap.add_argument("--proposals", type=Path,
                    help="one .npz with an (R, 4) xyxy array per image file stem")
    ap.add_argument("--output", type=Path, help="write the detections here as JSON")
    args = ap.parse_args(argv)
    try:
        runner = Runner(args.model)
        given = np.load(args.proposals) if args.proposals else None
    except (OSError, ValueError) as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    out = {}
    for path in args.images:
        if given is not None and path.stem not in given.files:
            ap.exit(2, f"{ap.prog}: error: {args.proposals} has no windows for {path.stem}\n")
        windows = given[path.stem] if given is not None else None
        try:
            d = runner.detect(decode(path), windows)
        except (OSError, ValueError) as e:
            ap.exit(2, f"{ap.prog}: error: {path}: {e}\n")
        out[path.stem] = {"boxes": [[round(float(v), 2) for v in b] for b in d["boxes"]],
                          "scores": [float(s) for s in d["scores"]],
                          "labels": [int(i) for i in d["labels"]], "names": d["names"]}
        best = ", ".join(f"{n} {s:.2f}" for n, s in zip(d["names"][:3], d["scores"][:3]))
        print(f"{path}: {len(d['scores'])} detections" + (f" (best: {best})" if best else ""))
    if args.output:
        args.output.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
