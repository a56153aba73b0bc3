"""Test-time views of a trained classifier (paper Sec. 3.1.4-3.1.5).

- ``center``: the centre ``crop`` of the image resized to shorter side ``resize`` (224 of 256).
- ``10crop``: centre + 4 corners, with flips, each run through the whole net (10 conv passes).
- ``full``: the whole image with shorter side ``full_size``, aspect kept (SPP nets).
- ``fmap10``: the same 10 windows, cut from the conv maps of the whole image and its flip
  (2 conv passes), projected with ``project_boxes``, pyramid-pooled, fc, scores averaged.
- ``multiview``: scales {224, 256, 300, 360, 448, 560} (scaled by ``crop / 224``), 9 window
  positions (centre, 4 corners, 4 side middles) x 2 flips each — 6 distinct at the smallest scale
  — plus the 2 full-image views: 96 + 2 views from one conv map per scale and flip (12 passes).

Scores are softmax probabilities averaged over views. ``fmap10`` equals ``10crop`` when the map
projection is exact (a net of 1x1 convs and non-overlapping pools, windows on its grid; see
``tests/classification/test_views.py``). On real nets the two differ by border effects: a crop's
own conv map sees zero padding at the crop's edges where the whole image's map sees the real
neighbouring pixels, and window edges round to whole map cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..data.transforms import crop_boxes, pad_batch, resize_shorter, to_tensor
from ..ops import project_boxes, spp_pool_cells

__all__ = ["VIEW_MODES", "PAPER_SCALES", "ViewSettings", "ViewOutput", "predict_views",
           "view_windows"]

VIEW_MODES = ("center", "10crop", "full", "fmap10", "multiview")
PAPER_SCALES = (224, 256, 300, 360, 448, 560)  # multi-view testing scales at crop 224
PAPER_CROP = 224


@dataclass(frozen=True)
class ViewSettings:
    crop: int = 224  # view size (paper: 224)
    resize: int = 256  # shorter side for centre / 10-crop / fmap10 (paper: 256)
    full_size: int = 256  # shorter side of the full-image view
    mean: float = 128.0
    input_scale: float = 1.0 / 128

    @property
    def multiview_scales(self) -> tuple[int, ...]:
        f = self.crop / PAPER_CROP
        return tuple(max(self.crop, round(s * f)) for s in PAPER_SCALES)


@dataclass
class ViewOutput:
    probs: Tensor  # (K,) averaged softmax
    views: int  # how many views were averaged
    conv_passes: int  # how many times the conv trunk ran


def view_windows(image_size: tuple[int, int], crop: int, positions: str = "five") -> Tensor:
    """Distinct ``crop x crop`` windows (``xyxy`` pixels) of an image of ``image_size``.

    ``"five"``: centre + 4 corners (the standard 10-view without flips). ``"nine"``: also the 4
    side middles (multi-view testing). Duplicates (when a side equals ``crop``) are removed."""
    h, w = image_size
    if positions == "five":
        tl = list(crop_boxes(image_size, crop).values())
    elif positions == "nine":
        ys, xs = (0, (h - crop) // 2, h - crop), (0, (w - crop) // 2, w - crop)
        tl = [(y, x) for y in ys for x in xs]
    else:
        raise ValueError(f"positions must be 'five' or 'nine', got {positions!r}")
    seen, out = set(), []
    for y, x in tl:
        if (y, x) not in seen:
            seen.add((y, x))
            out.append([x, y, x + crop, y + crop])
    return torch.tensor(out, dtype=torch.float32)


def _flip_boxes(boxes: Tensor, width: int) -> Tensor:
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)


def _requires_spp(model, mode: str) -> None:
    if not getattr(model, "has_spp", False):
        raise ValueError(f"view mode {mode!r} needs an SPP net (any input size); "
                         f"{getattr(model, 'name', 'this model')} has a fixed-size pool5 — use "
                         "'center' or '10crop'")


def _tensor(img: np.ndarray, s: ViewSettings) -> Tensor:
    return to_tensor(img, s.mean, s.input_scale)


def _window_scores(model, fmap: Tensor, boxes: Tensor) -> Tensor:
    """Softmax of windows ``boxes`` (pixels of the image behind ``fmap (1, C, H, W)``)."""
    cells = project_boxes(boxes, model.feature_stride, fmap.shape[-2:], model.feature_offset)
    pooled = spp_pool_cells(fmap, cells, torch.zeros(len(cells), dtype=torch.long),
                            model.spp_levels, getattr(model, "pool_mode", "max"))
    return model.classify_pooled(pooled).softmax(1)


@torch.no_grad()
def predict_views(model, img: np.ndarray, mode: str, settings: ViewSettings) -> ViewOutput:
    """Average class probabilities of one image (RGB ``uint8``) over the views of ``mode``."""
    if mode not in VIEW_MODES:
        raise ValueError(f"mode must be one of {VIEW_MODES}, got {mode!r}")
    s = settings
    device = next(model.parameters()).device
    fmt = torch.channels_last

    def run(batch: list[Tensor]) -> Tensor:
        x = torch.stack(batch).to(device).contiguous(memory_format=fmt)
        return model(x).softmax(1)

    if mode in ("center", "10crop", "fmap10"):
        base = resize_shorter(img, s.resize)
        boxes = view_windows(base.shape[:2], s.crop, "five")
    if mode == "center":
        c = boxes[0].long().tolist()
        return ViewOutput(run([_tensor(base[c[1]:c[3], c[0]:c[2]], s)])[0], 1, 1)
    if mode == "10crop":
        crops = [base[y1:y2, x1:x2] for x1, y1, x2, y2 in boxes.long().tolist()]
        batch = [_tensor(c, s) for c in crops] + [_tensor(c[:, ::-1], s) for c in crops]
        return ViewOutput(run(batch).mean(0), len(batch), len(batch))
    _requires_spp(model, mode)
    if mode == "full":
        full = resize_shorter(img, s.full_size)
        return ViewOutput(run([_tensor(full, s)])[0], 1, 1)

    def maps(image: np.ndarray) -> tuple[Tensor, Tensor]:
        x = torch.stack([_tensor(image, s), _tensor(image[:, ::-1], s)]).to(device)
        f = model.forward_features(x.contiguous(memory_format=fmt))
        return f[:1], f[1:]

    if mode == "fmap10":
        fmap, fmap_flip = maps(base)
        w = base.shape[1]
        probs = torch.cat([_window_scores(model, fmap, boxes),
                           _window_scores(model, fmap_flip, _flip_boxes(boxes, w))])
        return ViewOutput(probs.mean(0), len(probs), 2)
    # multiview
    all_probs, passes = [], 0
    for scale in s.multiview_scales:
        image = resize_shorter(img, scale)
        fmap, fmap_flip = maps(image)
        passes += 2
        win = view_windows(image.shape[:2], s.crop, "nine")
        all_probs += [_window_scores(model, fmap, win),
                      _window_scores(model, fmap_flip, _flip_boxes(win, image.shape[1]))]
        if scale == s.full_size:  # the full-image views reuse this scale's maps
            all_probs.append(model.forward_head(torch.cat([fmap, fmap_flip])).softmax(1))
    if s.full_size not in s.multiview_scales:
        fmap, fmap_flip = maps(resize_shorter(img, s.full_size))
        passes += 2
        all_probs.append(model.forward_head(torch.cat([fmap, fmap_flip])).softmax(1))
    probs = torch.cat(all_probs)
    return ViewOutput(probs.mean(0), len(probs), passes)


@torch.no_grad()
def predict_full_batch(model, imgs: Sequence[np.ndarray], settings: ViewSettings) -> Tensor:
    """The ``full`` view of several images in one zero-padded batch (``(N, K)`` softmax): each
    image at shorter side ``full_size`` and its own aspect ratio, pooled over its valid map."""
    _requires_spp(model, "full")
    device = next(model.parameters()).device
    batch, sizes = pad_batch([_tensor(resize_shorter(im, settings.full_size), settings)
                              for im in imgs])
    x = batch.to(device).contiguous(memory_format=torch.channels_last)
    return model.forward_padded(x, sizes).softmax(1)


def evaluate_views(model, images: Sequence[tuple[np.ndarray, int]], modes: Sequence[str],
                   settings: ViewSettings, progress: bool = True,
                   batch_size: int = 1) -> dict[str, dict[str, float]]:
    """Top-1 / top-5, views and conv passes per image, and seconds per image, for each mode.
    ``batch_size > 1`` runs the ``full`` view on padded batches of that many images
    (:func:`predict_full_batch`); the other views are per image."""
    import time

    from tqdm import tqdm

    from ..evaluation.topk import topk_correct

    results = {}
    for mode in modes:
        c1 = c5 = n = views = passes = 0
        t0 = time.perf_counter()
        if mode == "full" and batch_size > 1:
            # images of like aspect ratio share a batch: little padding (the order of the
            # images does not change what is counted)
            by_aspect = sorted(images, key=lambda il: il[0].shape[1] / il[0].shape[0])
            for i in tqdm(range(0, len(images), batch_size), desc="views full (batched)",
                          disable=not progress, leave=False):
                chunk = by_aspect[i:i + batch_size]
                probs = predict_full_batch(model, [im for im, _ in chunk], settings)
                t1, t5 = topk_correct(probs, torch.tensor([lab for _, lab in chunk]), (1, 5))
                c1, c5, n = c1 + t1, c5 + t5, n + len(chunk)
            views = passes = n
            images_iter: Sequence = []
        else:
            images_iter = images
        for img, label in tqdm(images_iter, desc=f"views {mode}", disable=not progress,
                               leave=False):
            out = predict_views(model, img, mode, settings)
            t1, t5 = topk_correct(out.probs[None], torch.tensor([label]), (1, 5))
            c1, c5, n = c1 + t1, c5 + t5, n + 1
            views, passes = views + out.views, passes + out.conv_passes
        dt = time.perf_counter() - t0
        results[mode] = {"top1": c1 / max(n, 1), "top5": c5 / max(n, 1), "images": n,
                         "views_per_image": views / max(n, 1),
                         "conv_passes_per_image": passes / max(n, 1),
                         "seconds_per_image": dt / max(n, 1),
                         "batch_size": batch_size if mode == "full" else 1}
    return results
