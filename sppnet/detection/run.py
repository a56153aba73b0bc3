"""The one detection run loop: a detector (or several, combined) and a stream of images in; per
image its detections — or the error that skipped it — and the seconds of each stage out.
``sppnet detect``, ``sppnet eval-det`` (:func:`~sppnet.detection.evaluate.evaluate_detector`),
``load_detector(...)(images)``, the demo's timing and ``sppnet bench detect`` consume it; none
of them runs an image its own way.

Shapes: R windows, U distinct windows, D pooled dims, K classes, M detections.

One photo, from ``sppnet detect`` to its JSON, is these steps — all in this module, with the
detector's trained parts and the ops they call:

1. **the image** (:func:`run_images`): a file is decoded once — by the proposal worker when it
   had to propose (it hands the decoded image back), else here; an image in memory is
   converted by the one rule of :mod:`sppnet.data.decode`;
2. **its windows**: given (``--proposals``), or the detector's proposer
   (``settings.proposal``): from the cache, or computed by worker processes ahead of the
   network (:func:`~sppnet.detection.proposal_cache.proposal_stream`); windows of zero width or
   height dropped (:func:`usable_windows`);
3. **features** (:func:`window_features`): the image's scaled sizes computed once; conv maps
   once per scale (:func:`~sppnet.detection.features.compute_maps`); each window given the
   scale where its area is closest to 224² and projected once onto that map's cells
   (:func:`~sppnet.detection.features.window_cells`, :func:`sppnet.ops.project_boxes`);
   windows with the same cells pooled once (:func:`~sppnet.detection.features.pool_cells`,
   :func:`sppnet.ops.spp_pool_cells`). The R-CNN way instead warps every window to 224 x 224
   and runs the trunk on it (:func:`~sppnet.detection.rcnn.rcnn_pool`);
4. **scores** (:func:`score_windows`): the trained SVMs on an fc layer or the fc8 softmax, one
   fc pass shared by every scoring variant asked for (evaluation scores them all);
5. **boxes** (:func:`postprocess`): regressed (the ridge regressors or the head's own deltas),
   clipped to the image, per-class NMS, the best ``max_dets``;
6. an :class:`ImageResult`; :meth:`Detections.to_json` is what ``detections.json`` holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.decode import ImageDecodeError, to_rgb_array
from ..data.transforms import to_tensor
from ..ops import batched_nms, clip_boxes
from ..utils.timing import StageClock
from .bbox_reg import decode_per_class
from .features import compute_maps, compute_maps_many, dedupe_windows, pool_cells, window_cells
from .proposal_cache import proposal_stream
from .rcnn import rcnn_pool
from .scales import scaled_sizes

__all__ = ["Detections", "ImageResult", "Variant", "run_images", "detect_images",
           "detect_image", "detect_combined", "combine_detections", "window_features",
           "score_windows", "postprocess", "own_variant", "usable_windows"]

log = logging.getLogger(__name__)

# a way to score: (name, score "svm" | "softmax", svm layer or None, box regression?,
# box source "regressor" | "head")
Variant = tuple[str, str, "str | None", bool, str]
# what a failed image is reported with: a detection error (not a bug) skips the image
DETECTION_ERRORS = (RuntimeError, MemoryError, ValueError, OSError)


@dataclass
class Detections:
    """One image's detections (torchvision-style), continuous 0-based ``xyxy`` pixels."""

    boxes: Tensor  # (M, 4)
    scores: Tensor  # (M,)
    labels: Tensor  # (M,) int64 class indices
    timings: dict = field(default_factory=dict)

    def to_json(self, classes: Sequence[str]) -> dict:
        return {"boxes": [[round(float(v), 2) for v in b] for b in self.boxes],
                "scores": [float(s) for s in self.scores],
                "labels": [int(i) for i in self.labels],
                "names": [classes[int(i)] for i in self.labels]}


@dataclass
class ImageResult:
    """What the loop yields per image: its detections (the detector's own scoring, and every
    variant asked for by name), or the error that skipped it; the image (decoded) and the
    windows scored; seconds per stage (``decode``, ``proposals``, ``conv``, ``pool``, ``fc``,
    ``nms``, ``wall``) and counts (``windows``, ``unique``)."""

    index: int
    image_id: str
    path: str | None
    detections: Detections | None = None
    variants: dict[str, Detections] = field(default_factory=dict)
    image: np.ndarray | None = None
    boxes: Tensor | None = None  # (R, 4) the windows scored
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a stage's seconds are its own (CUDA runs
    asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------- 2. windows
def usable_windows(boxes: Tensor) -> Tensor:
    """``boxes (R, 4)`` without windows of zero (or negative) width or height or non-finite
    coordinates: they cannot be pooled or regressed. Counts them in a warning."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ok = torch.isfinite(boxes).all(1) & (w > 0) & (h > 0)
    if not bool(ok.all()):
        log.warning("dropped %d of %d windows with zero width or height (or non-finite)",
                    int((~ok).sum()), len(boxes))
        boxes = boxes[ok]
    return boxes


def as_windows(boxes: Tensor | np.ndarray) -> Tensor:
    """Proposals as the ``(R, 4)`` float32 windows a detector scores (unusable ones dropped)."""
    b = np.asarray(boxes, np.float32)
    if b.size and not (b.ndim == 2 and b.shape[1] == 4):
        raise ValueError(f"proposals must be (R, 4) xyxy boxes, got shape {b.shape}")
    return usable_windows(torch.as_tensor(b).reshape(-1, 4))


# ---------------------------------------------------------------------------- 3. features
@torch.no_grad()
def spp_features(det: Any, image: np.ndarray, boxes: Tensor, dedupe: bool = True,
                 reuse_buffer: bool = False,
                 maps: list[Tensor] | None = None) -> tuple[Tensor, Tensor | None, dict]:
    """Pool5 of the windows from conv maps computed once per scale: ``(pooled (U, D),
    inverse (R,) or None, seconds)``. The scaled sizes are computed once and every window
    projected once. With ``dedupe`` windows that project onto the same map cells are pooled
    once and ``pooled[inverse]`` is the per-window matrix. With ``reuse_buffer`` the result is
    a view of the detector's buffer that the next call overwrites (no fresh 100 MB allocation
    per image). ``maps``: the image's conv maps when already computed (a batched trunk pass)."""
    st = det.settings
    size = image.shape[:2]
    sizes = scaled_sizes(size, st.scales)
    t0 = time.perf_counter()
    if maps is None:
        maps = compute_maps(det.backbone, image, st.scales, det.spec, sizes=sizes)
    _sync(maps[0].device)
    t1 = time.perf_counter()
    cells = window_cells(maps, size, st.scales, boxes, det.backbone.feature_stride,
                         det.backbone.feature_offset, sizes=sizes)  # (R, 5)
    inverse = None
    if dedupe and len(boxes):
        first, inverse = dedupe_windows(cells)
        cells = cells[first]  # (U, 5)
    out = det._buffer(len(cells), maps[0]) if reuse_buffer else None
    pooled = pool_cells(maps, cells, st.levels, out=out)
    _sync(pooled.device)
    t2 = time.perf_counter()
    return pooled, inverse, {"conv": t1 - t0, "pool": t2 - t1, "unique": len(pooled)}


@torch.no_grad()
def rcnn_features(det: Any, image: np.ndarray, boxes: Tensor) -> tuple[Tensor, None, dict]:
    """Pool5 of each window the R-CNN way (warp, conv net per window)."""
    t0 = time.perf_counter()
    x = to_tensor(image, det.spec.mean, det.spec.input_scale)
    pooled = rcnn_pool(det.backbone, x, boxes, det.settings.levels)
    _sync(pooled.device)
    return pooled, None, {"conv": time.perf_counter() - t0, "pool": 0.0}


def window_features(det: Any, image: np.ndarray, boxes: Tensor, mode: str = "spp",
                    reuse_buffer: bool = False,
                    maps: list[Tensor] | None = None) -> tuple[Tensor, Tensor | None, dict]:
    """Pool5 of the windows ``boxes (R, 4)`` (any device; computed on the detector's), the
    SPP way or the R-CNN way."""
    boxes = boxes.to(det.device)
    if mode == "spp":
        return spp_features(det, image, boxes, reuse_buffer=reuse_buffer, maps=maps)
    if mode == "rcnn":
        return rcnn_features(det, image, boxes)
    raise ValueError(f"mode must be spp or rcnn, got {mode!r}")


# ---------------------------------------------------------------------------- 4-5. scores
def own_variant(det: Any) -> Variant:
    """The detector's own scoring (its settings) as a variant named ``detector``."""
    st = det.settings
    return ("detector", st.score, st.svm_layer if st.score == "svm" else None, st.bbox_reg,
            st.bbox_source)


@torch.no_grad()
def score_windows(det: Any, pooled: Tensor, boxes: Tensor, inverse: Tensor | None,
                  image_size: tuple[int, int], variants: Sequence[Variant], main: str, *,
                  nms_iou: float | None = None, max_dets: int | None = None
                  ) -> tuple[dict[str, Detections], dict[str, float]]:
    """Detections of every variant from one set of pooled windows: the fc pass of a scoring
    (and the head's deltas with it) is shared by the variants that use it, with and without
    box regression. Returns them by name and the seconds of ``main``'s ``fc`` and ``nms``.
    ``nms_iou``, ``max_dets``: as :func:`postprocess` (default: the detector's settings)."""
    scored: dict[tuple, tuple[Tensor, float]] = {}
    deltas: dict[str, Tensor | None] = {}
    out, seconds = {}, {}

    def head_pass() -> None:  # an end-to-end head: softmax and deltas from one fc pass
        t0 = time.perf_counter()
        sc, deltas["head"] = det.head_outputs(pooled)
        _sync(sc.device)
        scored["softmax", None] = (sc, time.perf_counter() - t0)

    e2e = det.head.box_deltas
    for name, score, layer, reg, source in variants:
        t_head = 0.0
        if (score, layer) not in scored:
            if score == "softmax" and e2e:
                head_pass()
            else:
                t0 = time.perf_counter()
                sc = det.score_pooled(pooled, score, layer)
                _sync(sc.device)
                scored[score, layer] = (sc, time.perf_counter() - t0)
        if reg and source == "head" and e2e and "head" not in deltas:
            head_pass()  # the deltas' pass gives the softmax too: counted as fc time
            t_head = scored["softmax", None][1]
        scores, t_fc = scored[score, layer]
        t1 = time.perf_counter()
        if reg and source not in deltas:
            deltas[source] = det.box_deltas(pooled, source)
        out[name] = postprocess(det, pooled, boxes, scores, image_size, reg, inverse,
                                nms_iou, max_dets, deltas=deltas.get(source) if reg else None,
                                bbox_source=source)
        if name == main:
            seconds = {"fc": t_fc + t_head, "nms": time.perf_counter() - t1}
    return out, seconds


@torch.no_grad()
def postprocess(det: Any, pooled: Tensor, boxes: Tensor, scores: Tensor,
                image_size: tuple[int, int], bbox_reg: bool | None = None,
                inverse: Tensor | None = None, nms_iou: float | None = None,
                max_dets: int | None = None, deltas: Tensor | None = None,
                bbox_source: str | None = None) -> Detections:
    """Regress (optionally), clip, per-class NMS, keep the ``max_dets`` best (both default
    to the detector's settings).

    ``pooled`` and ``scores`` are per distinct window when ``inverse`` (R,) is given.
    ``deltas``: the box deltas ``(U, K, 4)`` when already computed (else from
    ``bbox_source``, by default the settings'). The detections come back on the CPU."""
    boxes = boxes.to(scores.device)
    st = det.settings
    nms_iou = st.nms_iou if nms_iou is None else nms_iou
    max_dets = st.max_dets if max_dets is None else max_dets
    bbox_reg = st.bbox_reg if bbox_reg is None else bbox_reg
    if inverse is not None:
        scores = scores[inverse]
    r, k = scores.shape
    if bbox_reg and r and deltas is None:
        deltas = det.box_deltas(pooled, bbox_source)  # (U, K, 4)
    if bbox_reg and r and deltas is not None:
        cand = decode_per_class(det.coder, deltas if inverse is None else deltas[inverse],
                                boxes)
    else:
        cand = boxes.float()[:, None].expand(r, k, 4)
    cand = clip_boxes(cand.reshape(-1, 4), image_size)  # (R*K, 4)
    flat_scores = scores.reshape(-1)
    labels = torch.arange(k, device=scores.device).repeat(r)
    ok = torch.isfinite(flat_scores)
    cand, flat_scores, labels = cand[ok], flat_scores[ok], labels[ok]
    keep = batched_nms(cand, flat_scores, labels, nms_iou)[:max_dets]
    return Detections(cand[keep].cpu(), flat_scores[keep].cpu(), labels[keep].cpu())


def detect_image(det: Any, image: np.ndarray, boxes: Tensor | np.ndarray, mode: str = "spp",
                 maps: list[Tensor] | None = None) -> Detections:
    """Detections of one detector for an RGB ``(H, W, 3)`` uint8 image and its proposal
    windows (those with zero width or height dropped, with a warning), with the seconds of
    each stage in ``timings``. ``maps``: the image's conv maps if already computed."""
    windows = as_windows(boxes)
    return _detect(det, image, windows, mode, maps, [own_variant(det)], "detector")[0]


def _detect(det: Any, image: np.ndarray, windows: Tensor, mode: str, maps: list[Tensor] | None,
            variants: Sequence[Variant], main: str) -> tuple[Detections, dict[str, Detections]]:
    """Steps 3-5 for one detector: ``(the main variant's detections with the timings, every
    variant's)``."""
    pooled, inverse, timings = window_features(det, image, windows, mode, reuse_buffer=True,
                                               maps=maps)
    by_name, seconds = score_windows(det, pooled, windows, inverse, image.shape[:2], variants,
                                     main)
    d = by_name[main]
    d.timings = {**timings, **seconds}
    return d, by_name


def combine_detections(dets: Sequence[Detections], nms_iou: float = 0.3,
                       max_dets: int = 100) -> Detections:
    """Per-class NMS over the union of several detectors' candidates of one image (SPP section
    4.3, model combination)."""
    boxes = torch.cat([d.boxes for d in dets])
    scores = torch.cat([d.scores for d in dets])
    labels = torch.cat([d.labels for d in dets])
    keep = batched_nms(boxes, scores, labels, nms_iou)[:max_dets]
    return Detections(boxes[keep], scores[keep], labels[keep])


@torch.no_grad()
def detect_combined(detectors: Sequence[Any], image: np.ndarray,
                    boxes: Tensor | np.ndarray, mode: str = "spp") -> Detections:
    """Every detector scores (and regresses) all windows with its own NMS turned off; then one
    per-class NMS at the first detector's threshold keeps the best ``max_dets`` of the union.
    Each detector scores the way one detector does (:func:`score_windows`: one fc pass for the
    scores and the head's deltas); ``timings`` holds ``conv``, ``pool``, ``fc`` and ``nms``
    summed over the detectors."""
    if not detectors:
        raise ValueError("detect_combined needs at least one detector")
    classes = detectors[0].classes
    for d in detectors[1:]:
        if d.classes != classes:
            raise ValueError(f"detectors disagree on classes: {classes} vs {d.classes}")
    boxes = torch.as_tensor(np.asarray(boxes, np.float32)).reshape(-1, 4)
    cands = []
    seconds = {"conv": 0.0, "pool": 0.0, "fc": 0.0, "nms": 0.0}  # summed over the detectors
    for d in detectors:
        pooled, inverse, t = window_features(d, image, boxes, mode)
        # every candidate of every detector, before NMS (the NMS runs once on the union),
        # scored as one detector scores (one fc pass for the scores and the head's deltas)
        by_name, s = score_windows(d, pooled, boxes, inverse, image.shape[:2], [own_variant(d)],
                                   "detector", nms_iou=1.0, max_dets=len(boxes) * len(d.classes))
        cands.append(by_name["detector"])
        seconds["conv"] += t["conv"]
        seconds["pool"] += t["pool"]
        seconds["fc"] += s["fc"]
        seconds["nms"] += s["nms"]
    first = detectors[0].settings
    t0 = time.perf_counter()
    out = combine_detections(cands, first.nms_iou, first.max_dets)
    seconds["nms"] += time.perf_counter() - t0
    out.timings = seconds
    return out


# ---------------------------------------------------------------------------- 1-6. the loop
@dataclass
class _Item:
    image_id: str
    path: str | None  # a file (decoded once), or None
    image: Any = None  # an image in memory (converted by the one rule)


def _items(images: Iterable, ids: Sequence[str] | None) -> list[_Item]:
    """The stream as items: files (paths, or a data set's annotations) or images in memory."""
    items = []
    for k, im in enumerate(images):
        if hasattr(im, "image_path") and hasattr(im, "image_id"):  # a data set's annotation
            items.append(_Item(im.image_id, str(im.image_path)))
        elif isinstance(im, (str, Path)):
            items.append(_Item(Path(im).stem, str(im)))
        else:  # converted once, for the proposer and the network
            items.append(_Item(str(k), None, to_rgb_array(im)))
    if ids is not None:
        if len(ids) != len(items):
            raise ValueError(f"got {len(ids)} image ids for {len(items)} images")
        for it, i in zip(items, ids):
            it.image_id = i
    return items


def _windows(items: list[_Item], proposals: Any, det: Any, cache_dir: str | Path | None,
             workers: int) -> Iterator[tuple[np.ndarray | None, str, float, np.ndarray | None]]:
    """``(boxes or None, error, seconds proposing, image decoded for it or None)`` per item:
    given (one array per image, or ``{image_id: boxes}``), or the detector's proposer."""
    if proposals is None:
        todo = [it.path if it.path is not None else it.image for it in items]
        return proposal_stream(todo, det.settings.proposal, cache_dir, workers)
    if isinstance(proposals, Mapping):
        return ((proposals.get(it.image_id), "" if it.image_id in proposals else
                 f"none given for {it.image_id!r}", 0.0, None) for it in items)
    if len(proposals) != len(items):
        raise ValueError(f"got {len(proposals)} proposal sets for {len(items)} images")
    return ((b, "", 0.0, None) for b in proposals)


def _shared_passes(items: list[_Item], batch_size: int, mode: str) -> dict[int, list[int]]:
    """Image index -> the images whose trunk pass it shares: images in memory of one size, at
    most ``batch_size`` together, in order (SPP mode; a file is decoded one at a time)."""
    if mode != "spp" or batch_size <= 1 or any(it.path is not None for it in items):
        return {}
    groups: dict[tuple, list[int]] = {}
    for k, it in enumerate(items):
        groups.setdefault(np.shape(it.image), []).append(k)
    out = {}
    for ks in groups.values():
        for c in range(0, len(ks), batch_size):
            chunk = ks[c:c + batch_size]
            if len(chunk) > 1:
                out.update({k: chunk for k in chunk})
    return out


def run_images(detector: Any, images: Iterable, proposals: Any = None, *,
               ids: Sequence[str] | None = None, cache_dir: str | Path | None = None,
               workers: int = 2, mode: str | None = None,
               variants: Sequence[Variant] | None = None, main: str | None = None,
               batch_size: int = 1, errors: str = "skip") -> Iterator[ImageResult]:
    """Detect in every image of a stream and yield an :class:`ImageResult` per image, in order.

    Args:
        detector: an ``SPPDetector``, or a list of them (combined: NMS on the union of their
            candidates; SPP section 4.3).
        images: files (paths; or a data set's annotations, by their ``image_path`` and
            ``image_id``), or images in memory (arrays, PIL images, tensors; converted by the
            one rule of :mod:`sppnet.data.decode`). Ids: ``ids``, else file stems / indices.
        proposals: ``None`` (the detector's proposer and settings, cached in ``cache_dir`` for
            files, computed ``workers`` processes ahead), ``{image_id: (R, 4)}``, or one
            ``(R, 4)`` array per image.
        mode: ``spp`` or ``rcnn`` (default: the way the detector was trained).
        variants, main: scoring variants to compute from each image's one feature pass (see
            :func:`sppnet.detection.evaluate.variants_of`) and the one reported as
            ``detections`` (default: the detector's own scoring).
        batch_size: images in memory of one size share a trunk pass this many at a time.
        errors: ``skip`` (an image that cannot be read, proposed or detected is yielded with
            its error, logged, and the loop goes on) or ``raise``.
    """
    dets = list(detector) if isinstance(detector, (list, tuple)) else [detector]
    mode = mode or dets[0].settings.mode
    variants = list(variants or [own_variant(dets[0])])
    main = main or variants[0][0]
    items = _items(images, ids)
    passes = _shared_passes(items, batch_size, mode) if len(dets) == 1 else {}
    held: dict[int, list[Tensor]] = {}
    clock = StageClock()
    stream = iter(_windows(items, proposals, dets[0], cache_dir, workers))
    for k, item in enumerate(items):
        clock.begin()  # the image's wall time: waiting for its windows included
        boxes, err, prop_s, decoded = next(stream)
        res = ImageResult(k, item.image_id, item.path)
        try:
            if boxes is None:
                raise _NoWindows(err)
            clock.start("decode")
            res.image = (decoded if decoded is not None else item.image
                         if item.path is None else to_rgb_array(item.path))
            clock.stop()
            res.boxes = as_windows(boxes)
            if len(dets) > 1:
                res.detections = detect_combined(dets, res.image, res.boxes, mode)
            else:  # the maps of a shared trunk pass, or None (computed for this image alone)
                maps = _maps(dets[0], items, passes, held, k, mode)
                res.detections, res.variants = _detect(dets[0], res.image, res.boxes, mode,
                                                       maps, variants, main)
        except (_NoWindows, *DETECTION_ERRORS) as e:
            held.pop(k, None)  # a skipped image's shared maps are not kept
            if errors != "skip":
                raise
            res.error = _report(item, e)
        res.timings = {**(res.detections.timings if res.detections else {}), **clock.lap(),
                       "proposals": prop_s}
        res.timings |= {"windows": len(res.boxes)} if res.boxes is not None else {}
        yield res


class _NoWindows(RuntimeError):
    """An image whose windows could not be had (the proposer failed on it)."""


def _report(item: _Item, e: Exception) -> str:
    """The error an image was skipped for, logged; the text ``failed.json`` records."""
    where = item.path or f"image {item.image_id}"
    if isinstance(e, _NoWindows):
        log.warning("no proposals for %s: %s", where, e)
        return f"no proposals: {e}"
    if isinstance(e, ImageDecodeError):
        log.warning("skipping %s", e)
        return str(e)
    log.warning("skipping %s: %s: %s", where, type(e).__name__, e)
    return f"{type(e).__name__}: {e}"


def _maps(det: Any, items: list[_Item], passes: dict[int, list[int]],
          held: dict[int, list[Tensor]], k: int, mode: str) -> list[Tensor] | None:
    """Image ``k``'s conv maps when it shares a batched trunk pass (computed at the first of
    its batch that gets this far, for it and the batch's images still to come; held for
    those), else ``None`` (computed alone)."""
    if k not in passes:
        return None
    if k not in held:
        chunk = [j for j in passes[k] if j >= k]  # earlier ones were skipped
        maps = compute_maps_many(det.backbone, [items[j].image for j in chunk],
                                 det.settings.scales, det.spec)
        held.update(zip(chunk, maps))
    return held.pop(k)


def detect_images(det: Any, images: Any, proposals: Any = None, mode: str | None = None,
                  workers: int = 2, batch_size: int = 8) -> list[dict] | dict:
    """The Python API of a detector (``det(images)``; see ``SPPDetector.forward``): one image or
    a list in, torchvision-style dicts out (``boxes (M, 4)``, ``scores``, ``labels``,
    ``names``)."""
    many = isinstance(images, (list, tuple))
    batch = [to_rgb_array(im) for im in (images if many else [images])]
    if proposals is not None and not many:
        proposals = [proposals]
    out = []
    for r in run_images(det, batch, proposals, workers=workers, mode=mode,
                        batch_size=max(1, batch_size), errors="raise"):
        d = r.detections
        out.append({"boxes": d.boxes, "scores": d.scores, "labels": d.labels,
                    "names": [det.classes[int(i)] for i in d.labels]})
    return out if many else out[0]
