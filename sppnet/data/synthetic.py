"""A deterministic synthetic detection set: shapes on real photos, nothing downloaded.

Backgrounds are photographs and elevation maps that ship inside installed packages
(scikit-learn's ``china.jpg`` and ``flower.jpg``, matplotlib's ``grace_hopper.jpg`` and its two
elevation grids rendered with a terrain colormap), cut into crops of varied position, size
(longer side ~200-700 px), aspect ratio, flip and colour. On each, 1-4 objects of
:data:`CLASSES` are drawn at random scale, aspect, rotation, colour and texture (solid, stripes,
checks, gradient or noise), with exact boxes: the tight box of every pixel the object's
(anti-aliased) mask touches.

Everything follows from ``seed``: the same seed gives the same pixels and boxes.
Boxes: continuous 0-based ``xyxy`` (the loader's convention); :func:`write_voc_folder` writes
them as VOC's 1-based inclusive pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from ..ops import box_iou

__all__ = ["CLASSES", "SyntheticImage", "background_photos", "make_image", "write_voc_folder",
           "jitter_boxes"]

CLASSES = ("circle", "triangle", "star", "cross")
SIDE_RANGE = (200, 700)  # longer side of a generated image, pixels
OBJECT_RANGE = (0.14, 0.5)  # object height / image shorter side
MAX_OBJECTS = 4
MAX_OVERLAP = 0.0  # objects never overlap, so every box is its visible mask


@dataclass
class SyntheticImage:
    """One generated image: ``image (H, W, 3) uint8``, ``boxes (R, 4)`` continuous ``xyxy``,
    ``labels (R,)`` indices into :data:`CLASSES`."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def _package_file(module: str, *parts: str) -> Path:
    import importlib

    mod = importlib.import_module(module)
    return Path(mod.__file__).parent.joinpath(*parts)


def _terrain(npz: Path, key: str) -> np.ndarray:
    from matplotlib import colormaps

    with np.load(npz) as z:
        elev = np.asarray(z[key], np.float64)
    lo, hi = np.percentile(elev, [1, 99])
    rgb = colormaps["terrain"](np.clip((elev - lo) / max(hi - lo, 1e-9), 0, 1))[..., :3]
    img = Image.fromarray((rgb * 255).astype(np.uint8))
    return np.asarray(img.resize((img.width * 2, img.height * 2), Image.BICUBIC))


def background_photos() -> list[np.ndarray]:
    """The background sources, ``(H, W, 3) uint8`` each, from files inside scikit-learn and
    matplotlib (raises ``FileNotFoundError`` naming a file a damaged install lacks)."""
    photos = [_package_file("sklearn.datasets", "images", "china.jpg"),
              _package_file("sklearn.datasets", "images", "flower.jpg"),
              _package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")]
    grids = [(_package_file("matplotlib", "mpl-data", "sample_data", "jacksboro_fault_dem.npz"),
              "elevation"),
             (_package_file("matplotlib", "mpl-data", "sample_data", "topobathy.npz"),
              "topo")]
    for p in photos + [g for g, _ in grids]:
        if not p.is_file():
            raise FileNotFoundError(f"background source {p} is missing; reinstall scikit-learn "
                                    "and matplotlib")
    out = [np.asarray(Image.open(p).convert("RGB")) for p in photos]
    for p, key in grids:
        out.append(_terrain(p, key))
    return out


def _background(rng: np.random.Generator, photos: Sequence[np.ndarray]) -> np.ndarray:
    src = photos[int(rng.integers(len(photos)))]
    sh, sw = src.shape[:2]
    aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.8)))  # w / h of the output
    frac = rng.uniform(0.3, 1.0)  # of the largest crop with that aspect
    ch = min(sh, sw / aspect) * frac
    cw = ch * aspect
    y0 = rng.uniform(0, sh - ch)
    x0 = rng.uniform(0, sw - cw)
    side = int(rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1))
    w, h = (side, round(side / aspect)) if aspect >= 1 else (round(side * aspect), side)
    img = Image.fromarray(src).resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(img, np.float32)
    arr = arr * rng.uniform(0.7, 1.2, size=3) + rng.uniform(-20, 20)  # colour cast, brightness
    return np.clip(arr, 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator) -> np.ndarray:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0))
    return np.array([r, g, b], np.float32) * 255


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An ``(h, w, 3) float32`` fill: solid, stripes, checks, gradient or noise."""
    a, b = _colour(rng), _colour(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = int(rng.integers(5))
    if kind == 0:  # solid
        t = np.zeros((h, w), np.float32)
    elif kind == 1:  # stripes at a random angle
        ang, period = rng.uniform(0, math.pi), rng.uniform(5, 16)
        t = (np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * 2 * math.pi / period) > 0)
        t = t.astype(np.float32)
    elif kind == 2:  # checks
        p = rng.uniform(5, 14)
        t = ((np.floor(xx / p) + np.floor(yy / p)) % 2).astype(np.float32)
    elif kind == 3:  # gradient
        ang = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(ang) + yy * math.sin(ang)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    else:  # noise
        t = rng.random((h, w)).astype(np.float32) * 0.6
    return a * (1 - t[..., None]) + b * t[..., None]


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]], np.float64)


def _shape_points(label: int, rng: np.random.Generator) -> np.ndarray | None:
    """Polygon of a shape in the unit square around 0 (``None`` = ellipse)."""
    name = CLASSES[label]
    if name == "circle":
        return None
    if name == "triangle":
        pts = np.array([[0.0, -1.0], [0.866, 0.5], [-0.866, 0.5]])
        return _rotate(pts, rng.choice([0.0, math.pi]) + rng.uniform(-0.25, 0.25))
    if name == "star":
        inner = rng.uniform(0.38, 0.5)
        ang = np.arange(10) * math.pi / 5 - math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        pts = np.stack([r * np.cos(ang), r * np.sin(ang)], 1)
        return _rotate(pts, rng.uniform(-0.3, 0.3))
    t = rng.uniform(0.28, 0.42)  # cross: arm half-width
    pts = np.array([[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1], [-t, 1],
                    [-t, t], [-1, t], [-1, -t], [-t, -t]], np.float64)
    return _rotate(pts, rng.uniform(-0.3, 0.3))


def _mask(label: int, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A ``(h, w) float32`` anti-aliased mask of the shape stretched to ``h x w``."""
    ss = 4  # supersampling
    img = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(img)
    pts = _shape_points(label, rng)
    if pts is None:
        draw.ellipse([0, 0, w * ss - 1, h * ss - 1], fill=255)
    else:
        pts = pts - pts.min(0)
        pts = pts / np.maximum(pts.max(0), 1e-9) * [w * ss - 1, h * ss - 1]
        draw.polygon([tuple(p) for p in pts], fill=255)
    return np.asarray(img.resize((w, h), Image.BOX), np.float32) / 255


def make_image(rng: np.random.Generator, photos: Sequence[np.ndarray]) -> SyntheticImage:
    """One image with 1-:data:`MAX_OBJECTS` objects; every box is the tight box of its
    mask (objects do not overlap, so nothing hides a part of another)."""
    canvas = _background(rng, photos).astype(np.float32)
    ih, iw = canvas.shape[:2]
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        label = int(rng.integers(len(CLASSES)))
        for _try in range(20):
            h = int(min(ih, iw) * rng.uniform(*OBJECT_RANGE))
            w = int(h * math.exp(rng.uniform(math.log(0.6), math.log(1.6))))
            if w >= iw - 2 or h < 12 or w < 12:
                continue
            x0, y0 = int(rng.integers(0, iw - w)), int(rng.integers(0, ih - h))
            box = np.array([x0, y0, x0 + w, y0 + h], np.float64)
            if boxes and float(box_iou(torch.from_numpy(box[None]),
                                       torch.from_numpy(np.array(boxes))).max()) > MAX_OVERLAP:
                continue
            m = _mask(label, rng, h, w)
            fill = _texture(rng, h, w)
            if rng.random() < 0.3:  # a dark outline
                edge = np.asarray(Image.fromarray((m * 255).astype(np.uint8)).filter(
                    ImageFilter.FIND_EDGES), np.float32) / 255
                fill = fill * (1 - np.clip(edge * 2, 0, 1)[..., None])
            region = canvas[y0:y0 + h, x0:x0 + w]
            canvas[y0:y0 + h, x0:x0 + w] = region * (1 - m[..., None]) + fill * m[..., None]
            ys, xs = np.nonzero(m > 0)  # every pixel the object touched
            boxes.append(np.array([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1,
                                   y0 + ys.max() + 1], np.float64))
            labels.append(label)
            break
    noise = rng.normal(0, rng.uniform(0, 4), canvas.shape)
    image = np.clip(canvas + noise, 0, 255).astype(np.uint8)
    return SyntheticImage(image, np.array(boxes, np.float32).reshape(-1, 4),
                          np.array(labels, np.int64))


def write_voc_folder(root: str | Path, n_images: int, seed: int = 0, prefix: str = "img",
                     progress: Callable | None = None) -> list[Path]:
    """Generate ``n_images`` images into ``root`` as JPEG + VOC XML side by side (the layout
    :func:`sppnet.data.voc.load_voc` reads); returns the XML paths. Image ``k`` depends only on
    ``(seed, k)``."""
    from .voc import write_voc_xml

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    photos = background_photos()
    out = []
    for k in progress(range(n_images)) if progress else range(n_images):
        s = make_image(np.random.default_rng([seed, k]), photos)
        name = f"{prefix}_{k:05d}"
        Image.fromarray(s.image).save(root / f"{name}.jpg", quality=92)
        out.append(write_voc_xml(root / f"{name}.xml", f"{name}.jpg", s.image.shape[:2],
                                 s.boxes, [CLASSES[i] for i in s.labels]))
    return out


def jitter_boxes(gt: np.ndarray, image_size: tuple[int, int], n: int,
                 rng: np.random.Generator, scale: float = 0.3) -> np.ndarray:
    """``n`` windows around the ground-truth boxes ``(G, 4)`` (centre and size jittered by up
    to ``scale`` of the box size) plus ``n // 4`` random windows — cheap proposals for tests."""
    h, w = image_size
    out = [gt.astype(np.float64)]
    if len(gt):
        src = gt[rng.integers(0, len(gt), n)].astype(np.float64)
        cw, ch = src[:, 2] - src[:, 0], src[:, 3] - src[:, 1]
        cx, cy = src[:, 0] + cw / 2, src[:, 1] + ch / 2
        cx += rng.uniform(-scale, scale, n) * cw
        cy += rng.uniform(-scale, scale, n) * ch
        cw *= np.exp(rng.uniform(-scale, scale, n))
        ch *= np.exp(rng.uniform(-scale, scale, n))
        out.append(np.stack([cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2], 1))
    m = n // 4 + 1
    xy = rng.uniform(0, 1, (m, 2)) * [w, h]
    wh = rng.uniform(0.05, 1, (m, 2)) * [w, h]
    out.append(np.concatenate([xy, xy + wh], 1))
    boxes = np.clip(np.concatenate(out), 0, [w, h, w, h])
    keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    return boxes[keep].astype(np.float32)
