"""The R-CNN way (baseline): warp every window to the net's input size and run the conv net on it.

Shapes: R windows, D pooled dims.

Each window is enlarged so that, once warped to ``input_size`` x ``input_size``, it carries
``context_pad`` pixels of image context on every side (R-CNN section 2.1, "p = 16"); pixels outside
the image are the mean (zero after normalisation). The warped crop's conv map is pooled with the
same pyramid as SPP mode, so the same fc layers, SVMs and regressors apply to both modes and
accuracy and time compare on one model (the paper's Table 10).

Trained its own way (``train-det --mode rcnn``), the fc layers, SVMs and box regression learn from
these per-window features instead of windows pooled from the image's conv map:
:class:`WindowFeatureCache` keeps each image's pooled window features on disk (float16, verified,
one file per image and flip), because the conv net per window is what makes this way slow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import spp_pool
from ..utils.digest import array_digest, file_digest, load_verified, save_verified
from .features import module_device

__all__ = ["warp_windows", "rcnn_pool", "WindowFeatureCache", "CONTEXT_PAD", "RCNN_INPUT"]

CONTEXT_PAD = 16  # R-CNN: 16 pixels of warped context around each window
RCNN_INPUT = 224  # warped size (ZF-5's 224x224 input)


def warp_windows(image: Tensor, boxes: Tensor, input_size: int = RCNN_INPUT,
                 context_pad: int = CONTEXT_PAD) -> Tensor:
    """Crops of the normalised image ``(3, H, W)`` warped to ``(R, 3, S, S)`` with context.

    Bilinear sampling (``grid_sample``, zeros outside the image) of the context-enlarged window.
    """
    r = len(boxes)
    if r == 0:
        return image.new_zeros(0, 3, input_size, input_size)
    b = boxes.to(torch.float32)
    scale = input_size / (input_size - 2 * context_pad)  # enlarge so the pad is `context_pad`
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    hw, hh = (b[:, 2] - b[:, 0]) / 2 * scale, (b[:, 3] - b[:, 1]) / 2 * scale
    h, w = image.shape[-2:]
    # sample centres of the S output pixels, in image pixels, then normalised to [-1, 1]
    t = (torch.arange(input_size, dtype=torch.float32, device=image.device) + 0.5
         ) / input_size * 2 - 1  # (S,)
    xs = cx[:, None] + t[None] * hw[:, None]  # (R, S)
    ys = cy[:, None] + t[None] * hh[:, None]
    gx = xs / w * 2 - 1
    gy = ys / h * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(r, input_size, input_size),
                        gy[:, :, None].expand(r, input_size, input_size)], -1)  # (R, S, S, 2)
    return F.grid_sample(image[None].expand(r, -1, -1, -1), grid, mode="bilinear",
                         padding_mode="zeros", align_corners=False)


@torch.no_grad()
def rcnn_pool(backbone: nn.Module, image: Tensor, boxes: Tensor, levels: Sequence[int],
              input_size: int = RCNN_INPUT, context_pad: int = CONTEXT_PAD,
              batch_size: int = 32) -> Tensor:
    """Pooled features ``(R, D)`` of every window, the conv net run once per window (on the
    backbone's device)."""
    device = module_device(backbone)
    image, boxes = image.to(device), boxes.to(device)
    out = []
    for i in range(0, len(boxes), batch_size):
        crops = warp_windows(image, boxes[i:i + batch_size], input_size, context_pad)
        crops = crops.contiguous(memory_format=torch.channels_last)
        out.append(spp_pool(backbone.forward_features(crops), levels))
    if not out:
        c = backbone.feature_channels
        return torch.zeros(0, c * int(np.sum([n * n for n in levels])), device=device)
    return torch.cat(out)


class WindowFeatureCache:
    """R-CNN pooled features ``(R, D)`` of an image's windows, in ``DIR/<key>.safetensors``.

    The key hashes the backbone fingerprint, the image bytes, the windows (their exact float32
    bytes, in order), the flip, the pyramid levels, the warp settings and the dtype, so a
    changed window set or backbone never reads stale features. Entries carry a checksum and
    are rebuilt when they fail it."""

    def __init__(self, directory: str | Path, backbone: nn.Module, spec, levels: Sequence[int],
                 dtype: torch.dtype = torch.float16, batch_size: int = 32) -> None:
        from .features import backbone_fingerprint

        self.dir = Path(directory)
        self.backbone = backbone
        self.spec = spec
        self.levels = tuple(levels)
        self.dtype = dtype
        self.batch_size = batch_size
        self.fingerprint = backbone_fingerprint(spec)
        self.computed = 0  # windows run through the conv net by this object (for timing)

    def key(self, image_path: Path, boxes: np.ndarray, flip: bool) -> str:
        b = np.ascontiguousarray(boxes, np.float32)
        raw = (f"{self.fingerprint}|{file_digest(image_path)}|{array_digest(b)}|{len(b)}|"
               f"{int(flip)}|{self.levels}|{RCNN_INPUT}|{CONTEXT_PAD}|{self.dtype}")
        return hashlib.sha1(raw.encode()).hexdigest()

    def get(self, image_path: str | Path, boxes: np.ndarray, flip: bool = False) -> Tensor:
        """Features of ``boxes`` (in the flipped image's coordinates when ``flip``), in the
        stored dtype (float16 by default; convert the rows you use)."""
        from ..data.decode import decode_image
        from ..data.transforms import to_tensor
        image_path = Path(image_path)
        key = self.key(image_path, boxes, flip)
        path = self.dir / f"{key}.safetensors"
        feats = load_verified(path, self.dtype, 2, "R-CNN window-feature", key=key)
        if feats is None or len(feats) != len(boxes):
            img = decode_image(image_path)
            if flip:
                img = np.ascontiguousarray(img[:, ::-1])
            x = to_tensor(img, self.spec.mean, self.spec.input_scale)
            with torch.inference_mode():
                feats = rcnn_pool(self.backbone, x, torch.from_numpy(
                    np.asarray(boxes, np.float32)), self.levels,
                    batch_size=self.batch_size).to("cpu", self.dtype)
            self.computed += len(boxes)
            save_verified(path, feats, {"key": key})
        return feats
