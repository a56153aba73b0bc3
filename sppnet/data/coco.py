"""COCO-format detection data: an instances JSON plus an image folder, read into the same
:class:`~sppnet.data.voc.VOCDataset` the VOC reader gives, and written back out both ways.

Conventions (pycocotools' and the COCO site's):

- ``bbox`` is continuous ``[x, y, width, height]``; it becomes our continuous 0-based ``xyxy``
  ``(x, y, x + w, y + h)`` once, here.
- ``iscrowd = 1`` objects are kept and flagged like VOC's ``difficult``: they are neither
  positives nor false-positive sources for VOC AP; COCOeval treats them as crowds.
- Classes are the ``categories`` in ascending ``id`` order (labels are indices into that list);
  a ``category_id`` that no category declares is an error naming it.
- Image ids for the rest of sppnet (cache keys, ``detections.json``) are the file stems, as for
  VOC; the COCO integer id of each is kept in ``VOCDataset.coco_ids``.

Files that cannot be used (an image that is missing or unreadable, an annotation of an unknown
image) are skipped by name with a warning, as the VOC reader does.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .voc import Annotation, AnnotationError, VOCDataset, read_image_size, write_voc_xml

__all__ = ["load_coco", "read_coco_json", "to_coco", "write_voc_folder", "is_coco_json",
           "load_annotations",
           "coco_categories"]

log = logging.getLogger(__name__)


def is_coco_json(path: str | Path) -> bool:
    return str(path).lower().endswith(".json")


def read_coco_json(path: str | Path) -> dict:
    """The parsed JSON, checked for the three lists COCO instances files have."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotations {path} do not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "categories")):
        raise ValueError(f"{path} is not a COCO instances file (needs 'images' and "
                         "'categories' lists, and 'annotations')")
    data.setdefault("annotations", [])
    return data


def coco_categories(data: dict, path: Path) -> dict[int, str]:
    cats = {}
    for c in data["categories"]:
        try:
            cid, name = int(c["id"]), str(c["name"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: a category needs an integer 'id' and a 'name', got "
                             f"{c!r}") from None
        if cid in cats and cats[cid] != name:
            raise ValueError(f"{path}: category id {cid} is given to {cats[cid]!r} and "
                             f"{name!r}; each category needs its own id")
        cats[cid] = name
    dupes = [n for n, k in Counter(cats.values()).items() if k > 1]
    if dupes:
        raise ValueError(f"{path}: category names {dupes} appear under several ids")
    return dict(sorted(cats.items()))


def _stem_ids(images: list[dict], path: Path) -> dict[int, str]:
    """COCO image id -> our image id: the file stem, or the file name where stems collide.
    Two images under one id, or one file under two ids, are an error naming them (their
    objects could not be told apart)."""
    ids = Counter(int(im["id"]) for im in images)
    dup = sorted(i for i, n in ids.items() if n > 1)
    if dup:
        raise ValueError(f"{path}: image id(s) {dup[:5]} are given to more than one image; "
                         "each image needs its own id")
    files = Counter(str(im["file_name"]) for im in images)
    dup_files = sorted(f for f, n in files.items() if n > 1)
    if dup_files:
        raise ValueError(f"{path}: file_name(s) {dup_files[:5]} appear under more than one "
                         "image id")
    names = {int(im["id"]): str(im["file_name"]) for im in images}
    stems = Counter(Path(n).stem for n in names.values())
    return {i: (Path(n).stem if stems[Path(n).stem] == 1 else n.replace("/", "_"))
            for i, n in names.items()}


def load_coco(annotations: str | Path, images: str | Path | None = None,
              classes: Sequence[str] | None = None, need_images: bool = True) -> VOCDataset:
    """Read a COCO instances JSON.

    Args:
        annotations: the JSON file.
        images: the folder ``file_name`` is relative to (default: the JSON's folder).
        classes: class names in label order (default: the categories by ascending id); objects
            of other categories are ignored.
        need_images: False for evaluation: sizes come from the JSON's ``width``/``height``.
    """
    path = Path(annotations)
    data = read_coco_json(path)
    image_dir = Path(images) if images else path.parent
    if need_images and not image_dir.is_dir():
        raise FileNotFoundError(f"COCO image folder {image_dir} does not exist")
    cats = coco_categories(data, path)
    names = list(classes) if classes is not None else list(cats.values())
    index = {c: k for k, c in enumerate(names)}
    try:
        ours = _stem_ids(data["images"], path)
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: every image needs an integer 'id' and a 'file_name'") from None
    except (KeyError, TypeError):
        raise ValueError(f"{path}: every image needs an integer 'id' and a 'file_name'") from None
    objects: dict[int, list[dict]] = {i: [] for i in ours}
    skipped: dict[str, str] = {}
    for a in data["annotations"]:
        img = a.get("image_id") if isinstance(a, dict) else None
        if img not in objects:
            skipped[f"annotation {a.get('id') if isinstance(a, dict) else a!r}"] = (
                f"image_id {img!r} is not in 'images'")
            continue
        if a.get("category_id") not in cats:
            raise ValueError(f"{path}: annotation {a.get('id')!r} has category_id "
                             f"{a.get('category_id')!r}, which no category declares")
        objects[img].append(a)
    anns = []
    for im in data["images"]:
        cid = int(im["id"])
        try:
            anns.append(_annotation(im, ours[cid], objects[cid], cats, index, image_dir,
                                    need_images, path))
        except (OSError, AnnotationError, Image.DecompressionBombError) as e:
            log.warning("skipping %s", e)
            skipped[str(im.get("file_name"))] = str(e)
    for what, why in skipped.items():
        if what.startswith("annotation"):
            log.warning("skipping %s: %s", what, why)
    found = sorted({cats[a["category_id"]] for objs in objects.values() for a in objs})
    ds = VOCDataset(path, names, anns, skipped, found)
    ds.coco_ids = {ours[int(im["id"])]: int(im["id"]) for im in data["images"]}
    return ds


def _annotation(im: dict, image_id: str, objs: list[dict], cats: dict[int, str],
                index: dict[str, int], image_dir: Path, need_images: bool,
                path: Path) -> Annotation:
    image_path = image_dir / str(im["file_name"])
    declared = (int(im.get("height") or 0), int(im.get("width") or 0))
    if image_path.is_file():
        h, w = read_image_size(image_path)
        if declared != (0, 0) and declared != (h, w):
            log.warning("%s says %s is %s (H, W) but it is %s; using the image", path,
                        im["file_name"], declared, (h, w))
    elif need_images:
        raise AnnotationError(f"{path}: image {im['file_name']!r} is not in {image_dir}")
    elif min(declared) < 1:
        raise AnnotationError(f"{path}: image {im['file_name']!r} has no file and no "
                              "width/height")
    else:
        h, w = declared
    boxes, labels, crowd = [], [], []
    for a in objs:
        name = cats[a["category_id"]]
        if name not in index:
            continue
        try:
            x, y, bw, bh = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError):
            raise AnnotationError(f"{path}: annotation {a.get('id')!r} has no usable bbox "
                                  f"{a.get('bbox')!r}") from None
        if not all(math.isfinite(v) for v in (x, y, bw, bh)):
            log.warning("%s: annotation %r bbox is not finite; object skipped", path, a.get("id"))
            continue
        box = np.clip(np.array([x, y, x + bw, y + bh]), 0, [w, h, w, h])
        if box[2] <= box[0] or box[3] <= box[1]:
            log.warning("%s: annotation %r bbox %s is empty inside the %dx%d image; dropped",
                        path, a.get("id"), a["bbox"], w, h)
            continue
        boxes.append(box)
        labels.append(index[name])
        crowd.append(bool(a.get("iscrowd", 0)))
    return Annotation(image_id, image_path, (h, w), np.array(boxes).reshape(-1, 4), labels,
                      crowd)


def to_coco(ds: VOCDataset, image_root: str | Path | None = None) -> dict:
    """A COCO instances dict of ``ds``: categories 1..K in ``ds.classes`` order, images 1..N in
    dataset order with ``file_name`` relative to ``image_root`` (default: the bare name),
    ``difficult`` objects written as ``iscrowd = 1``."""
    cats = [{"id": k + 1, "name": c, "supercategory": "none"} for k, c in enumerate(ds.classes)]
    images, anns = [], []
    for n, a in enumerate(ds, 1):
        name = (str(Path(a.image_path).relative_to(image_root)) if image_root
                else Path(a.image_path).name)
        h, w = a.image_size
        images.append({"id": n, "file_name": name, "height": int(h), "width": int(w)})
        for box, label, diff in zip(a.boxes.astype(np.float64), a.labels, a.difficult):
            x1, y1, x2, y2 = (float(v) for v in box)
            anns.append({"id": len(anns) + 1, "image_id": n, "category_id": int(label) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": int(bool(diff))})
    return {"info": {"description": f"converted by sppnet from {ds.root}"},
            "images": images, "annotations": anns, "categories": cats}


def write_voc_folder(ds: VOCDataset, out: str | Path) -> list[Path]:
    """One VOC XML per image in ``out`` (``iscrowd`` written as ``difficult``); images are not
    copied: each XML names its image file, which stays where it is."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for a in ds:
        written.append(write_voc_xml(out / f"{a.image_id}.xml", Path(a.image_path).name,
                                     a.image_size, a.boxes, [ds.classes[k] for k in a.labels],
                                     a.difficult))
    return written


def load_annotations(root: str | Path, split: str | None = None,
                     classes: Sequence[str] | None = None, need_images: bool = True,
                     images: str | Path | None = None) -> VOCDataset:
    """A VOC folder or a COCO JSON (``images``: its image folder), by what ``root`` is."""
    from .voc import load_voc

    if is_coco_json(root):
        if split:
            raise ValueError(f"a split ({split!r}) is for VOC folders; a COCO file is one split "
                             "already")
        return load_coco(root, images, classes, need_images)
    if images:
        raise ValueError(f"an image folder ({images}) is for COCO files; {root} is a VOC folder "
                         "with its images inside")
    return load_voc(root, split, classes, need_images)
