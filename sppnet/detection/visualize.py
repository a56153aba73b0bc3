"""Pictures of detections: boxes drawn and labelled on the image, and a grid of several."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["draw_detections", "image_grid"]

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)]


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                    labels: np.ndarray, classes: Sequence[str], thresh: float = 0.0,
                    gt_boxes: np.ndarray | None = None, max_side: int = 640,
                    show_scores: bool = True) -> Image.Image:
    """The image with detections scoring above ``thresh`` (coloured per class, ``name score``,
    or ``name`` alone without ``show_scores``) and, optionally, ground truth (thin white)."""
    img = Image.fromarray(image)
    f = min(1.0, max_side / max(img.size))
    if f < 1.0:  # (a 1 x 5000 strip stays 1 px high, not 0)
        img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))),
                         Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    fs = max(11, round(max(img.size) / 32))  # legible after the grid's thumbnail
    try:
        font = ImageFont.load_default(size=fs)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        font, fs = ImageFont.load_default(), 11
    if gt_boxes is not None:
        for b in np.asarray(gt_boxes).reshape(-1, 4) * f:
            draw.rectangle([float(v) for v in b], outline=(255, 255, 255), width=1)
    order = np.argsort(np.asarray(scores))  # best drawn last (on top)
    for j in order:
        if scores[j] <= thresh:
            continue
        b = [float(v) * f for v in boxes[j]]
        color = PALETTE[int(labels[j]) % len(PALETTE)]
        draw.rectangle(b, outline=color, width=3)
        text = classes[int(labels[j])] + (f" {scores[j]:.2f}" if show_scores else "")
        tw = draw.textlength(text, font=font)
        top = max(0.0, b[1] - fs - 2)
        draw.rectangle([b[0], top, b[0] + tw + 4, top + fs + 2], fill=color)
        draw.text((b[0] + 2, top), text, fill=(0, 0, 0), font=font)
    return img


def image_grid(images: Sequence[Image.Image], path: str | Path, columns: int = 3,
               cell: int = 320) -> None:
    """Tile pictures (each fitted into ``cell`` x ``cell``) into one PNG."""
    if not images:
        return
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * cell, rows * cell), (255, 255, 255))
    for i, im in enumerate(images):
        im = im.copy()
        im.thumbnail((cell - 6, cell - 6))
        x = (i % columns) * cell + (cell - im.width) // 2
        y = (i // columns) * cell + (cell - im.height) // 2
        grid.paste(im, (x, y))
    grid.save(path)
