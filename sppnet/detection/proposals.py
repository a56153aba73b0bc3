"""Stage 1: region proposals — Selective Search (fast or quality mode) and EdgeBoxes, each a
function ``image -> (R, 4)`` windows; a ``+`` joins two proposers (the union of their windows).

Shapes: R windows per image, boxes ``(R, 4)`` float32 ``xyxy`` in the pixels of the original
image (continuous coordinates).

Selective Search is OpenCV contrib's ``ximgproc.segmentation`` (opencv-contrib-python-headless);
no model file is needed. OpenCV crashes (or returns nothing) on very elongated images, so an image
with aspect ratio above :data:`MAX_ASPECT` is padded with its mean colour to that aspect first and
the windows are mapped back and clipped. Large images are shrunk to :data:`SS_MAX_SIDE` for
speed (R-CNN ran Selective Search on VOC-sized ~500 px images) and the windows scaled back.

OpenCV randomises Selective Search's ranking of the windows (the set is fixed; the order is not,
and Python cannot seed it). :func:`canonical_windows` makes the windows a deterministic function
of the set: the same image and settings give the same windows in the same order, run after run.

The settings are :class:`~sppnet.detection.config.ProposalConfig`; the cache of windows per
image and the worker processes that compute them are :mod:`.proposal_cache`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .config import (
    DEFAULT_PROPOSALS,
    MAX_ASPECT,
    MAX_PROPOSALS,
    MIN_SIZE,
    PROPOSERS,
    SS_MAX_SIDE,
    UNION,
    ProposalConfig,
)

__all__ = ["ProposalConfig", "PROPOSERS", "UNION", "MAX_ASPECT", "SS_MAX_SIDE", "MAX_PROPOSALS",
           "MIN_SIZE", "propose", "proposer_parts", "union_windows", "selective_search",
           "edge_boxes", "edge_maps", "canonical_windows"]


def proposer_parts(cfg: ProposalConfig) -> list[ProposalConfig]:
    """The single-method configurations a (possibly joined) ``cfg.method`` is made of."""
    return [replace(cfg, method=m) for m in cfg.method.split(UNION)]


def union_windows(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The windows of several proposers as one set, in canonical order (nothing dropped)."""
    boxes = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in parts])
    return canonical_windows(boxes, len(boxes))


def propose(image: np.ndarray, cfg: ProposalConfig = DEFAULT_PROPOSALS) -> np.ndarray:
    """The windows of ``cfg.method`` for an RGB ``(H, W, 3)`` uint8 image, ``(R, 4)`` xyxy."""
    if UNION in cfg.method:
        return union_windows([propose(image, part) for part in proposer_parts(cfg)])
    if cfg.method == "edgeboxes":
        return edge_boxes(image, cfg)
    return selective_search(image, cfg)


def _downscaled(image: np.ndarray, max_side: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA)


def _to_original(boxes: np.ndarray, small: tuple[int, int], image: tuple[int, int],
                 cfg: ProposalConfig) -> np.ndarray:
    """Windows found on the downscaled image, in original pixels, clipped, tiny ones dropped,
    in canonical order."""
    (sh, sw), (h, w) = small, image
    boxes = boxes / np.array([sw / w, sh / h, sw / w, sh / h])
    boxes = np.clip(boxes, 0, [w, h, w, h])
    keep = ((boxes[:, 2] - boxes[:, 0]) >= cfg.min_size) & (
        (boxes[:, 3] - boxes[:, 1]) >= cfg.min_size)
    return canonical_windows(boxes[keep].astype(np.float32), cfg.max_proposals)


# EdgeBoxes (Zitnick & Dollar 2014; the paper's Sec. 4.5 alternative) without a learned edge
# model: the structured-edge model it is usually fed cannot be downloaded here, and OpenCV's
# EdgeBoxes takes any edge and orientation map. Edges = Sobel gradient magnitude of the blurred
# grey image, thinned by a Canny mask (dense, unthinned edges are ~40x slower for the same
# recall); orientation = the gradient's direction turned by 90 degrees (the edge's), in [0, pi).
EB_BLUR_SIGMA = 1.0
EB_CANNY = (20, 60)  # Canny hysteresis thresholds on the 0-255 grey image
EB_ALPHA, EB_BETA, EB_MIN_SCORE = 0.65, 0.75, 0.01  # EdgeBoxes' step size, NMS, min score


def edge_maps(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(edges, orientation)`` float32 maps of an RGB uint8 image (see above)."""
    import cv2

    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    g = cv2.GaussianBlur(g, (0, 0), EB_BLUR_SIGMA)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt(gx * gx + gy * gy)
    mag /= max(float(mag.max()), 1e-6)
    thin = cv2.Canny(np.clip(g * 255, 0, 255).astype(np.uint8), *EB_CANNY) > 0
    edges = np.ascontiguousarray(mag * thin, np.float32)
    orient = np.ascontiguousarray(np.mod(np.arctan2(gy, gx) + np.pi / 2, np.pi), np.float32)
    return edges, orient


def edge_boxes(image: np.ndarray, cfg: ProposalConfig = DEFAULT_PROPOSALS) -> np.ndarray:
    """EdgeBoxes windows of an RGB ``(H, W, 3)`` uint8 image -> ``(R, 4)`` float32 xyxy."""
    import cv2

    small = _downscaled(image, cfg.max_side)
    edges, orient = edge_maps(small)
    eb = cv2.ximgproc.createEdgeBoxes(alpha=EB_ALPHA, beta=EB_BETA, minScore=EB_MIN_SCORE,
                                      maxBoxes=cfg.max_proposals)
    rects, _ = eb.getBoundingBoxes(edges, orient)
    rects = np.asarray(rects, np.float64).reshape(-1, 4)  # (x, y, w, h)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], 1)
    return _to_original(boxes, small.shape[:2], image.shape[:2], cfg)


def selective_search(image: np.ndarray, cfg: ProposalConfig = DEFAULT_PROPOSALS) -> np.ndarray:
    """Selective Search windows of an RGB ``(H, W, 3)`` uint8 image -> ``(R, 4)`` float32 xyxy."""
    import cv2

    h, w = image.shape[:2]
    img = _downscaled(image, cfg.max_side)
    sh, sw = img.shape[:2]
    # pad an elongated image (bottom/right) with its mean colour up to cfg.max_aspect
    ph = max(0, int(np.ceil(sw / cfg.max_aspect)) - sh)
    pw = max(0, int(np.ceil(sh / cfg.max_aspect)) - sw)
    if ph or pw:
        mean = img.reshape(-1, 3).mean(0)
        padded = np.empty((sh + ph, sw + pw, 3), np.uint8)
        padded[:] = mean.astype(np.uint8)
        padded[:sh, :sw] = img
        img = padded
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(img[:, :, ::-1]))  # OpenCV wants BGR
    if cfg.method == "selective_search_fast":
        ss.switchToSelectiveSearchFast()
    elif cfg.method == "selective_search_quality":
        ss.switchToSelectiveSearchQuality()
    else:
        raise ValueError(f"method must be selective_search_fast or selective_search_quality, "
                         f"got {cfg.method!r}")
    rects = np.asarray(ss.process(), np.float64).reshape(-1, 4)  # (x, y, w, h) in img pixels
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], 1)
    boxes = np.minimum(boxes, [sw, sh, sw, sh])  # drop the padding
    return _to_original(boxes, (sh, sw), (h, w), cfg)


def canonical_windows(boxes: np.ndarray, max_proposals: int) -> np.ndarray:
    """The windows of an image as a deterministic function of their *set*.

    OpenCV ranks Selective Search's regions with an RNG Python cannot seed: the set of boxes
    is the same from run to run, the order is not. Window order feeds negative pruning,
    de-duplication and fine-tuning sampling, so here duplicates go, and when more than
    ``max_proposals`` remain an evenly spaced subset of them sorted by area (largest first)
    is kept — every scale stays represented. The result is sorted by ``(x1, y1, x2, y2)``."""
    b = np.unique(np.asarray(boxes, np.float32).reshape(-1, 4), axis=0)  # sorted, distinct
    if len(b) > max_proposals:
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        by_area = np.argsort(-area, kind="stable")
        pick = np.unique(np.linspace(0, len(b) - 1, max_proposals).round().astype(np.int64))
        b = b[np.sort(by_area[pick])]
    return b
