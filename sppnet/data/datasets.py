"""A detection data set by what its path is — a VOC-format folder or a COCO instances JSON —
as every detection command loads it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .coco import load_annotations
from .voc import VOCDataset

__all__ = ["load_dataset"]

log = logging.getLogger(__name__)


def load_dataset(root: str, split: str = "", classes: Sequence[str] = (),
                 images: str = "") -> VOCDataset:
    """A VOC folder (``split``: a devkit ``ImageSets/Main`` list) or a COCO JSON (``images``:
    its image folder); ``classes`` in label order, or empty for the names found. The files left
    out (hostile values, missing images) are logged by name."""
    ds = load_annotations(root, split or None, tuple(classes) or None, images=images or None)
    for f, why in ds.skipped.items():
        log.warning("left out %s: %s", f, why)
    return ds
