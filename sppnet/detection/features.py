"""Stage 2: conv features once per image (and scale), windows pooled from them.

Shapes: R windows, S scales, C channels, D = C * sum(n*n) pooled dims.

The conv maps are what is cached — not pooled vectors (2000 x 12,800 floats per image would be
~100 MB; the maps are a few MB). Windows are pooled on the fly with the fast window pooling
(:func:`sppnet.ops.spp_roi_pool`). Multi-scale (paper section 4.2): each window is pooled at the
one scale where its area is closest to 224^2.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..data.decode import decode_image
from ..data.transforms import resize_to, to_tensor
from ..models.backbone import BackboneSpec, load_backbone
from ..ops import spp_output_dim, spp_pool_cells
from ..utils.digest import file_digest, load_verified, save_verified
from ..utils.lru import ByteLRU
from .scales import FIVE_SCALES, MAX_LONG_SIDE, SINGLE_SCALE, TARGET_AREA, scaled_sizes

__all__ = ["BackboneSpec", "load_backbone", "module_device", "backbone_fingerprint", "scaled_sizes",
           "select_scales", "compute_maps", "compute_maps_many", "pool_windows", "pool_cells",
           "ConvMapCache", "window_cells", "dedupe_windows", "SINGLE_SCALE", "FIVE_SCALES",
           "TARGET_AREA", "MAX_LONG_SIDE"]



def module_device(module: nn.Module) -> torch.device:
    """Where a module's tensors are: its first parameter's or buffer's device (CPU if none)."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def backbone_fingerprint(spec: BackboneSpec) -> str:
    """Identifies the maps a backbone computes: its settings and its weight files' *bytes*
    (SHA-256), not their paths — a checkpoint retrained in place gets a new fingerprint, the
    same file elsewhere the same one."""
    from ..models.backbone import is_checkpoint
    from ..utils.digest import file_sha256

    d = asdict(spec)
    if d.get("weights") and Path(d["weights"]).is_file():
        d["weights"] = "sha256:" + file_sha256(d["weights"])
    if d["model"] != "mobilenet_v2" and is_checkpoint(d["model"]) and Path(d["model"]).is_file():
        d["model"] = "sha256:" + file_sha256(d["model"])
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def select_scales(boxes: Tensor, image_size: tuple[int, int], scales: Sequence[int],
                  target_area: float = TARGET_AREA,
                  sizes: Sequence[tuple[int, int]] | None = None) -> Tensor:
    """Index of the scale at which each window's area is closest to ``target_area``.

    Args:
        boxes (Tensor[R, 4]): windows in original-image pixels.
        sizes: ``scaled_sizes(image_size, scales)`` when already computed.
    Returns:
        LongTensor[R].
    """
    sizes = sizes if sizes is not None else scaled_sizes(image_size, scales)
    h, w = image_size
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).double()  # (R,)
    factors = torch.tensor([(sh / h) * (sw / w) for sh, sw in sizes], dtype=torch.float64,
                           device=boxes.device)
    return (area[:, None] * factors[None, :] - target_area).abs().argmin(1)  # (R,)


@torch.no_grad()
def compute_maps(backbone: nn.Module, image: np.ndarray, scales: Sequence[int],
                 spec: BackboneSpec, flip: bool = False,
                 sizes: Sequence[tuple[int, int]] | None = None) -> list[Tensor]:
    """Conv maps ``(C, H', W')`` of the image at each scale (shorter side ``s``; ``sizes``:
    the scaled ``(H', W')`` when already computed), on the backbone's device."""
    if flip:
        image = np.ascontiguousarray(image[:, ::-1])
    device = module_device(backbone)
    maps = []
    for size in sizes if sizes is not None else scaled_sizes(image.shape[:2], scales):
        x = to_tensor(resize_to(image, size), spec.mean, spec.input_scale)[None]
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        maps.append(backbone.forward_features(x)[0].contiguous())
    return maps


@torch.no_grad()
def compute_maps_many(backbone: nn.Module, images: Sequence[np.ndarray], scales: Sequence[int],
                      spec: BackboneSpec) -> list[list[Tensor]]:
    """:func:`compute_maps` of several images of one size, each scale in one batched trunk
    pass: ``maps[i][k]`` is image ``i``'s ``(C, H', W')`` map at scale ``k``."""
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"compute_maps_many needs images of one size, got {sorted(shapes)}")
    device = module_device(backbone)
    per_scale = []
    for size in scaled_sizes(images[0].shape[:2], scales):
        x = torch.stack([to_tensor(resize_to(im, size), spec.mean, spec.input_scale)
                         for im in images])
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        per_scale.append(backbone.forward_features(x))
    return [[m[i].contiguous() for m in per_scale] for i in range(len(images))]


def window_cells(maps: Sequence[Tensor], image_size: tuple[int, int], scales: Sequence[int],
                 boxes: Tensor, stride: float, offset: float,
                 scale_index: Tensor | None = None,
                 sizes: Sequence[tuple[int, int]] | None = None) -> Tensor:
    """``(R, 5)`` rows ``(scale, x0, y0, x1, y1)``: the map cells each window is pooled from —
    each window scaled to its scale (by default :func:`select_scales`) and projected onto that
    map by :func:`sppnet.ops.project_boxes`. ``sizes``: ``scaled_sizes(image_size, scales)``
    when already computed."""
    from ..ops import project_boxes

    if len(maps) != len(scales):
        raise ValueError(f"got {len(maps)} maps for {len(scales)} scales")
    device = maps[0].device
    boxes = boxes.to(device, torch.float32)
    sizes = sizes if sizes is not None else scaled_sizes(image_size, scales)
    if scale_index is None:
        scale_index = select_scales(boxes, image_size, scales, sizes=sizes)
    scale_index = scale_index.to(device)
    out = torch.zeros(len(boxes), 5, dtype=torch.long, device=device)
    out[:, 0] = scale_index
    h, w = image_size
    for k, (sh, sw) in enumerate(sizes):
        idx = (scale_index == k).nonzero().flatten()
        if idx.numel():
            b = boxes[idx] * torch.tensor([sw / w, sh / h, sw / w, sh / h], device=device)
            out[idx, 1:] = project_boxes(b, stride, maps[k].shape[-2:], offset)
    return out


def pool_cells(maps: Sequence[Tensor], cells: Tensor, levels: Sequence[int] = (6, 3, 2, 1),
               mode: str = "max", out: Tensor | None = None) -> Tensor:
    """Pool windows given as :func:`window_cells` rows ``(scale, x0, y0, x1, y1)`` ``(R, 5)``
    from the map of their scale (:func:`sppnet.ops.spp_pool_cells`).

    Args:
        out: a contiguous ``(R, D)`` tensor to write into (saves a large fresh allocation;
            when every window uses one scale the pooling writes there directly).
    Returns:
        Tensor[R, D] with ``D = C * sum(n*n)``.
    """
    device = maps[0].device
    dim = spp_output_dim(maps[0].shape[0], levels)
    if out is None:
        out = torch.empty(len(cells), dim, dtype=maps[0].dtype, device=device)
    elif out.shape != (len(cells), dim) or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous ({len(cells)}, {dim}) tensor, got "
                         f"{tuple(out.shape)}")
    used = torch.unique(cells[:, 0]).tolist()
    for k in used:
        idx = (cells[:, 0] == k).nonzero().flatten()
        batch = torch.zeros(len(idx), dtype=torch.long, device=device)  # (r,) one map
        if len(used) == 1:  # every window at this scale: pool straight into `out`
            return spp_pool_cells(maps[k][None], cells[idx, 1:], batch, levels, mode, out=out)
        out[idx] = spp_pool_cells(maps[k][None], cells[idx, 1:], batch, levels, mode)
    return out


def pool_windows(maps: Sequence[Tensor], image_size: tuple[int, int], scales: Sequence[int],
                 boxes: Tensor, stride: float, offset: float,
                 levels: Sequence[int] = (6, 3, 2, 1), scale_index: Tensor | None = None,
                 mode: str = "max", out: Tensor | None = None) -> Tensor:
    """Pool each window from the map of its scale: :func:`window_cells` (scale and cells per
    window), then :func:`pool_cells`.

    Args:
        maps: one ``(C, H', W')`` map per scale, in ``scales`` order.
        image_size: ``(H, W)`` of the original image the boxes refer to.
        boxes (Tensor[R, 4]): windows in original-image pixels.
        scale_index (LongTensor[R]): scale per window; by default :func:`select_scales`.
        out: see :func:`pool_cells`.
    Returns:
        Tensor[R, D] with ``D = C * sum(n*n)``.
    """
    cells = window_cells(maps, image_size, scales, boxes, stride, offset, scale_index)
    return pool_cells(maps, cells, levels, mode, out)


def dedupe_windows(cells: Tensor) -> tuple[Tensor, Tensor]:
    """Windows that pool the same cells of the same map give the same features: ``(first
    (U,), inverse (R,))`` with ``cells[first][inverse] == cells`` (the released SPP code and
    Fast R-CNN both pool and score each distinct projection once)."""
    uniq, inverse = torch.unique(cells, dim=0, return_inverse=True)
    first = torch.full((len(uniq),), len(cells), dtype=torch.long, device=cells.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(cells), device=cells.device),
                          reduce="amin")
    return first, inverse


class ConvMapCache:
    """Conv maps per (image, scale, flip) in ``DIR/<key>.safetensors``.

    The key hashes the backbone fingerprint (its weight files' bytes), the image bytes, the scale
    and the flip. Entries are written atomically with a checksum of their bytes and their own
    key; one that fails to load, has the wrong shape, no longer matches its checksum
    (overwritten in place) or stores another key (copied over another entry) is recomputed. Maps are
    stored as ``dtype`` (float16 by default: half the disk, relative rounding 5e-4; the pooled
    features are then exactly the max-pool of the stored maps)."""

    def __init__(self, directory: str | Path, backbone: nn.Module, spec: BackboneSpec,
                 dtype: torch.dtype = torch.float16, memory_bytes: int = 0,
                 fingerprint_extra: str = "") -> None:
        self.dir = Path(directory)
        self.backbone = backbone
        self.spec = spec
        self.dtype = dtype
        # a trunk trained end to end is the spec's plus its own weights: their digest
        self.fingerprint = backbone_fingerprint(spec) + fingerprint_extra
        self._digests: dict[str, str] = {}
        # maps read (and verified) once, then held as stored, least recently used out first
        self.memory = ByteLRU(memory_bytes)

    def _digest(self, image_path: Path) -> str:
        key = str(image_path)
        if key not in self._digests:
            self._digests[key] = file_digest(image_path)
        return self._digests[key]

    def key(self, image_path: Path, scale: int, flip: bool) -> str:
        raw = (f"{self.fingerprint}|{self._digest(image_path)}|{scale}|{int(flip)}|{self.dtype}"
               f"|long<={MAX_LONG_SIDE}")
        return hashlib.sha1(raw.encode()).hexdigest()

    def get(self, image_path: str | Path, scales: Sequence[int], flip: bool = False,
            image: np.ndarray | None = None) -> list[Tensor]:
        """Maps at every scale (float32): from memory, else from the disk cache (verified) or
        computed and stored."""
        image_path = Path(image_path)
        mkey = (str(image_path), tuple(scales), bool(flip))
        held = self.memory.get(mkey)
        if held is not None:
            return [m.float() for m in held]
        keys = [self.key(image_path, s, flip) for s in scales]
        maps = [load_verified(self.dir / f"{k}.safetensors", self.dtype, 3, "conv-map", key=k)
                for k in keys]
        todo = [i for i, m in enumerate(maps) if m is None]
        if todo:
            img = image if image is not None else decode_image(image_path)
            fresh = compute_maps(self.backbone, img, [scales[i] for i in todo], self.spec, flip)
            for i, m in zip(todo, fresh):  # cached (and pooled) on the CPU
                maps[i] = m.to("cpu", self.dtype).contiguous()
                save_verified(self.dir / f"{keys[i]}.safetensors", maps[i], {"key": keys[i]})
        self.memory.put(mkey, maps)
        return [m.float() for m in maps]
