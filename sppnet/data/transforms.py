"""The paper's image transforms on RGB ``uint8`` arrays ``(H, W, 3)`` (numpy / Pillow, no
torchvision).

Training (Sec. 3.1): resize the shorter side to 256, take a 224x224 crop from the centre or one of
the four corners of the whole image, flip horizontally, alter colours (AlexNet's PCA lighting
noise), subtract a mean (constant 128 for VOC / Caltech; a mean image warped to the input size for
ImageNet). Randomness comes from an explicit ``numpy.random.Generator`` so that a sample's
augmentation depends only on ``(seed, epoch, index)`` — resumable and identical across processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = [
    "pad_batch",
    "resize_full",
    "CROP_POSITIONS",
    "IMAGENET_EIGVAL",
    "IMAGENET_EIGVEC",
    "crop",
    "crop_boxes",
    "ensure_min_size",
    "lighting",
    "resize_shorter",
    "resize_to",
    "to_tensor",
]

# AlexNet's PCA of ImageNet RGB pixels (values in [0, 1]); used by many reimplementations
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
IMAGENET_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]])
LIGHTING_STD = 0.1  # AlexNet: alpha ~ N(0, 0.1)

CROP_POSITIONS = ("center", "top_left", "top_right", "bottom_left", "bottom_right")


def resize_shorter(img: np.ndarray, size: int) -> np.ndarray:
    """Resize so that the shorter side is ``size``, keeping the aspect ratio (bilinear with
    antialiasing when shrinking)."""
    h, w = img.shape[:2]
    if min(h, w) == size:
        return img
    if h <= w:
        return resize_to(img, (size, max(1, round(w * size / h))))
    return resize_to(img, (max(1, round(h * size / w)), size))


def resize_full(img: np.ndarray, size: int, max_side: int) -> np.ndarray:
    """The whole image at shorter side ``size``, aspect kept, unless its longer side would then
    exceed ``max_side``: then at longer side ``max_side`` (the aspect still kept)."""
    h, w = img.shape[:2]
    if max(h, w) * size > max_side * min(h, w):
        s = max_side / max(h, w)
        return resize_to(img, (max(1, round(h * s)), max(1, round(w * s))))
    return resize_shorter(img, size)


def resize_to(img: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Resize (warp) to exactly ``image_size = (H, W)``."""
    h, w = image_size
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def ensure_min_size(img: np.ndarray, min_size: int) -> np.ndarray:
    """Upscale a tiny image so that its shorter side is at least ``min_size``."""
    return resize_shorter(img, min_size) if min(img.shape[:2]) < min_size else img


def crop_boxes(image_size: tuple[int, int], crop_size: int) -> dict[str, tuple[int, int]]:
    """Top-left corners ``(y, x)`` of the 5 standard crops of ``crop_size`` in ``image_size``."""
    h, w = image_size
    if crop_size > min(h, w):
        raise ValueError(f"crop_size {crop_size} is larger than the image {image_size}")
    cy, cx = (h - crop_size) // 2, (w - crop_size) // 2
    return {"center": (cy, cx), "top_left": (0, 0), "top_right": (0, w - crop_size),
            "bottom_left": (h - crop_size, 0), "bottom_right": (h - crop_size, w - crop_size)}


def crop(img: np.ndarray, crop_size: int, position: str = "center") -> np.ndarray:
    """A ``crop_size`` square at one of :data:`CROP_POSITIONS`."""
    y, x = crop_boxes(img.shape[:2], crop_size)[position]
    return img[y:y + crop_size, x:x + crop_size]


def lighting(img: np.ndarray, rng: np.random.Generator, std: float = LIGHTING_STD) -> np.ndarray:
    """AlexNet PCA colour augmentation: add ``eigvec @ (alpha * eigval)`` to every pixel.

    Returns float32 ``(H, W, 3)`` in the 0-255 range."""
    alpha = rng.normal(0.0, std, size=3)
    shift = IMAGENET_EIGVEC @ (alpha * IMAGENET_EIGVAL) * 255.0
    return img.astype(np.float32) + shift.astype(np.float32)


def to_tensor(img: np.ndarray, mean: float | Sequence[float] | Tensor = 128.0,
              scale: float | Sequence[float] = 1.0 / 128) -> Tensor:
    """``(H, W, 3)`` array -> ``(3, H, W)`` float tensor, ``(x - mean) * scale``.

    ``mean`` is a constant (paper, VOC / Caltech: 128), one value per RGB channel (torchvision's
    ImageNet weights: ``255 * (0.485, 0.456, 0.406)``) or a ``(3, H, W)`` mean image, which is
    warped to the input size when it differs. ``scale`` is a constant or one value per channel
    (``1 / (255 * std)``)."""
    t = torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1)  # a writable copy
    if isinstance(mean, Tensor) and mean.shape[-2:] != t.shape[-2:]:
        mean = F.interpolate(mean[None].float(), size=tuple(t.shape[-2:]), mode="bilinear",
                             align_corners=False)[0]
    elif not isinstance(mean, Tensor) and np.ndim(mean) != 0:
        mean = _per_channel(mean, "mean", t.shape[0])
    if np.ndim(scale) != 0:
        scale = _per_channel(scale, "scale", t.shape[0])
    return (t - mean) * scale


def _per_channel(values: Sequence[float], name: str, channels: int) -> Tensor:
    v = torch.as_tensor(values, dtype=torch.float32).flatten()
    if v.numel() != channels:
        raise ValueError(f"{name} must be a number or {channels} numbers (one per channel), got "
                         f"{values!r}")
    return v[:, None, None]  # (C, 1, 1)


def pad_batch(images: Sequence[Tensor], multiple: int = 1) -> tuple[Tensor, Tensor]:
    """Images ``(3, H_i, W_i)`` of different sizes -> one zero-padded ``(N, 3, H, W)`` batch
    (each at the top left; ``H, W`` rounded up to ``multiple``) and the ``(N, 2)`` sizes
    ``(H_i, W_i)``. With a net's ``feature_size`` the sizes become the valid conv-map regions
    for ``spp_pool(..., image_sizes=...)``."""
    if not images:
        raise ValueError("pad_batch needs at least one image")
    sizes = torch.tensor([tuple(t.shape[-2:]) for t in images], dtype=torch.long)
    h, w = (int(v) for v in sizes.max(0).values)
    h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    out = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    for i, t in enumerate(images):
        out[i, :, :t.shape[-2], :t.shape[-1]] = t
    return out, sizes
