"""Folder-per-class image datasets (the Caltech-101 layout) and seeded splits.

``root/<class>/<image>``: classes are the sub-folders, sorted by name. Files that cannot be
decoded are skipped with a warning naming them, counted, and reported at the end of an epoch —
never a crash mid-epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .decode import IMAGE_EXTENSIONS, ImageDecodeError, decode_image
from .transforms import ensure_min_size, resize_shorter

__all__ = ["ClassFolder", "Sample", "split_per_class", "DecodedImages", "group_by_orientation"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclass
class ClassFolder:
    """The images of ``root/<class>/*``.

    Attributes:
        classes: class names (sub-folder names, sorted).
        samples: every image file with its class index, sorted by class then file name.
        empty_classes: sub-folders that held no image files (skipped, with a warning).
    """

    root: Path
    classes: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)

    @classmethod
    def scan(cls, root: str | Path, classes: Sequence[str] | None = None) -> ClassFolder:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder {root} does not exist or is not a folder")
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is not None:
            missing = sorted(set(classes) - set(names))
            if missing:
                raise ValueError(f"classes not found under {root}: {missing}")
            names = list(classes)
        out = cls(root=root)
        for name in names:
            files = sorted(f for f in (root / name).iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                out.empty_classes.append(name)
                continue
            label = len(out.classes)
            out.classes.append(name)
            out.samples += [Sample(f, label) for f in files]
        if out.empty_classes:
            log.warning("%d class folder(s) under %s hold no images and are skipped: %s",
                        len(out.empty_classes), root, ", ".join(out.empty_classes))
        if not out.samples:
            raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in the class "
                             f"folders of {root}; expected the layout root/<class>/<image>")
        return out

    def counts(self) -> list[int]:
        c = [0] * len(self.classes)
        for s in self.samples:
            c[s.label] += 1
        return c


def split_per_class(samples: Sequence[Sample], sizes: Sequence[int | float | None],
                    seed: int = 0) -> list[list[Sample]]:
    """Split every class's samples into consecutive parts, deterministically from ``seed``.

    ``sizes`` gives each part: an int (that many images per class, or all that are left), a float
    in ``(0, 1]`` (that fraction of the class, rounded, at least 1 when the class has images left)
    or ``None`` (all remaining). A class's images are shuffled with a generator seeded by
    ``(seed, label)``, so adding a class does not change another's split.
    """
    by_label: dict[int, list[Sample]] = {}
    for s in samples:
        by_label.setdefault(s.label, []).append(s)
    parts: list[list[Sample]] = [[] for _ in sizes]
    for label, items in sorted(by_label.items()):
        items = sorted(items, key=lambda s: s.path.name)
        order = np.random.default_rng([seed, label]).permutation(len(items))
        items = [items[i] for i in order]
        start = 0
        for k, size in enumerate(sizes):
            left = len(items) - start
            if size is None:
                n = left
            elif isinstance(size, float):
                if not 0 < size <= 1:
                    raise ValueError(f"a fractional split size must be in (0, 1], got {size}")
                n = min(left, max(1, round(size * len(items)))) if left else 0
            else:
                if size < 0:
                    raise ValueError(f"split sizes must be >= 0, got {size}")
                n = min(left, int(size))
            parts[k] += items[start:start + n]
            start += n
    return parts


class DecodedImages:
    """Decode-once cache: each image resized so its shorter side is ``resize``, kept as ``uint8``.

    ``get(i)`` returns the array or ``None`` for a file that failed to decode (logged once with
    its name; :attr:`failed` lists them all).
    """

    def __init__(self, samples: Sequence[Sample], resize: int, min_size: int = 1,
                 cache: bool = True) -> None:
        self.samples = list(samples)
        self.resize = resize
        self.min_size = min_size
        self.cache = cache
        self._arrays: dict[int, np.ndarray] = {}
        self.failed: dict[Path, str] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> np.ndarray | None:
        if i in self._arrays:
            return self._arrays[i]
        path = self.samples[i].path
        if path in self.failed:
            return None
        try:
            img = decode_image(path)
        except ImageDecodeError as e:
            self.failed[path] = str(e)
            log.warning("skipping %s", e)
            return None
        # one resize to the working size (as eval-cls does); upscaling only if that is still
        # below what the net needs
        img = ensure_min_size(resize_shorter(img, self.resize), self.min_size)
        if self.cache:
            self._arrays[i] = img
        return img

    def preload(self, progress: bool = True, desc: str = "decoding") -> None:
        """Decode every image now (with a progress bar), so that epochs only crop and flip."""
        import os
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        # Pillow releases the GIL while decoding, so threads overlap the work
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            for _ in tqdm(pool.map(self.load, range(len(self))), total=len(self), desc=desc,
                          disable=not progress, leave=False):
                pass


def group_by_orientation(order: np.ndarray, landscape: np.ndarray, batch_size: int,
                         rng: np.random.Generator) -> np.ndarray:
    """``order`` rearranged so that its consecutive ``batch_size`` chunks hold images of one
    orientation (``landscape[i]``: item ``order[i]`` is at least as wide as high), except at most
    one mixed chunk; the chunks in ``rng``'s order, a last partial chunk at the end. Zero-padded
    batches of mixed sizes then waste little (detectron2's aspect-ratio grouping). The number of
    full chunks is that of ``order`` itself: ``len(order) // batch_size``."""
    order, landscape = np.asarray(order), np.asarray(landscape, bool)
    if order.shape != landscape.shape:
        raise ValueError(f"order and landscape must have the same shape, got {order.shape} "
                         f"and {landscape.shape}")
    chunks, rest = [], []
    for part in (order[landscape], order[~landscape]):
        n = len(part) // batch_size * batch_size
        chunks += [part[i:i + batch_size] for i in range(0, n, batch_size)]
        rest.append(part[n:])
    rest = np.concatenate(rest)
    n = len(rest) // batch_size * batch_size
    chunks += [rest[i:i + batch_size] for i in range(0, n, batch_size)]
    full = [chunks[i] for i in rng.permutation(len(chunks))] if chunks else []
    return np.concatenate([*full, rest[n:]]).astype(order.dtype)
