"""VOC-format detection data: the devkit layout and "image + XML" folders.

Layouts found by :func:`load_voc`:

- devkit: ``ROOT/Annotations/*.xml``, ``ROOT/JPEGImages/*``, optional
  ``ROOT/ImageSets/Main/<split>.txt``;
- side by side: ``ROOT/*.xml`` beside ``ROOT/*.jpg`` (labelImg's default);
- split folders: ``ROOT/annotations/*.xml`` and ``ROOT/images/*``.

Boxes: VOC's 1-based inclusive pixel boxes ``[xmin, xmax]`` become continuous 0-based ``xyxy``
``(xmin - 1, ymin - 1, xmax, ymax)`` here, once (detectron2's convention); the devkit's ``+1``
lives only in :mod:`sppnet.evaluation.voc`. XML is parsed with ``defusedxml`` (no external
entities, no entity-expansion bombs).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .decode import IMAGE_EXTENSIONS

__all__ = ["Annotation", "VOCDataset", "AnnotationError", "parse_voc_xml", "write_voc_xml",
           "load_voc", "read_image_size"]

log = logging.getLogger(__name__)
# the one list of readable formats (sppnet.data.decode), in lower and upper case
IMAGE_EXTS = tuple(e for ext in IMAGE_EXTENSIONS for e in (ext, ext.upper()))


class AnnotationError(ValueError):
    """An annotation file that cannot be used (malformed XML, missing fields, missing image)."""


@dataclass
class Annotation:
    """One image and its objects.

    Attributes:
        image_id: the devkit's id (file stem).
        image_path: the image file.
        image_size: ``(H, W)`` of the decoded image.
        boxes (ndarray[R, 4] float32): continuous 0-based ``xyxy``.
        labels (ndarray[R] int64): indices into the dataset's ``classes``.
        difficult (ndarray[R] bool): VOC's ``difficult`` flag.
    """

    image_id: str
    image_path: Path
    image_size: tuple[int, int]
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    xml_path: Path | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        self.difficult = np.asarray(self.difficult, bool).reshape(-1)


@dataclass
class VOCDataset:
    root: Path
    classes: list[str]
    annotations: list[Annotation]
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why it was left out
    found_classes: list[str] = field(default_factory=list)  # every name in the XML, sorted
    coco_ids: dict[str, int] = field(default_factory=dict)  # image id -> COCO id (COCO files)

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, i: int) -> Annotation:
        return self.annotations[i]

    def subset(self, ids: Sequence[str]) -> VOCDataset:
        by_id = {a.image_id: a for a in self.annotations}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ValueError(f"{len(missing)} image id(s) are not in {self.root}: {missing[:5]}")
        return VOCDataset(self.root, self.classes, [by_id[i] for i in ids], dict(self.skipped),
                          list(self.found_classes),
                          {i: self.coco_ids[i] for i in ids if i in self.coco_ids})


def read_image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` from the image header, EXIF orientation applied (as :func:`decode_image`)."""
    with Image.open(path) as img:
        w, h = img.size
        orientation = img.getexif().get(0x0112, 1)
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _text(node, tag: str, xml_path: Path, required: bool = True) -> str | None:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise AnnotationError(f"{xml_path}: <{tag}> is missing or empty")
        return None
    return child.text.strip()


def _number(node, tag: str, xml_path: Path) -> float:
    text = _text(node, tag, xml_path)
    try:
        return float(text)
    except ValueError:
        raise AnnotationError(f"{xml_path}: <{tag}> is not a number: {text!r}") from None


def parse_voc_xml(xml_path: Path) -> dict:
    """Raw fields of one VOC XML file: ``filename``, ``size`` ``(H, W)`` (0 when absent) and
    ``objects`` (name, 1-based inclusive ``(xmin, ymin, xmax, ymax)``, difficult)."""
    import defusedxml.ElementTree as ET
    from defusedxml import DefusedXmlException

    try:
        root = ET.parse(str(xml_path)).getroot()
    except (ET.ParseError, DefusedXmlException) as e:
        raise AnnotationError(f"{xml_path}: not valid (or unsafe) XML: {e}") from None
    if root.tag != "annotation":
        raise AnnotationError(f"{xml_path}: root element is <{root.tag}>, expected <annotation>")
    size = root.find("size")
    h = w = 0
    if size is not None:
        w = _number(size, "width", xml_path) if size.find("width") is not None else 0.0
        h = _number(size, "height", xml_path) if size.find("height") is not None else 0.0
        if not (math.isfinite(w) and math.isfinite(h)) or w < 0 or h < 0:
            log.warning("%s: <size> %s x %s is not a usable size; ignored", xml_path, w, h)
            w = h = 0.0
        w, h = int(w), int(h)
    objects = []
    for obj in root.findall("object"):
        name = _text(obj, "name", xml_path)
        box = obj.find("bndbox")
        if box is None:
            raise AnnotationError(f"{xml_path}: object {name!r} has no <bndbox>")
        coords = tuple(_number(box, t, xml_path) for t in ("xmin", "ymin", "xmax", "ymax"))
        if not all(math.isfinite(c) for c in coords):
            log.warning("%s: %s box %s is not finite; object skipped", xml_path, name, coords)
            continue
        diff = _text(obj, "difficult", xml_path, required=False)
        objects.append((name, coords, diff not in (None, "0")))
    return {"filename": _text(root, "filename", xml_path, required=False), "size": (h, w),
            "objects": objects}


def write_voc_xml(xml_path: str | Path, filename: str, image_size: tuple[int, int],
                  boxes: np.ndarray, names: Sequence[str],
                  difficult: Sequence[bool] | None = None) -> Path:
    """Write one VOC annotation file (the inverse of :func:`parse_voc_xml` + load).

    ``boxes (R, 4)`` are continuous 0-based ``xyxy`` on whole pixels; they are written as VOC's
    1-based inclusive ``(x1 + 1, y1 + 1, x2, y2)``. ``image_size`` is ``(H, W)``."""
    from xml.sax.saxutils import escape

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(names) != len(boxes):
        raise ValueError(f"names has {len(names)} entries for {len(boxes)} boxes")
    difficult = [False] * len(boxes) if difficult is None else list(difficult)
    h, w = image_size
    objs = []
    for (x1, y1, x2, y2), name, diff in zip(boxes, names, difficult):
        objs.append(
            f"  <object>\n    <name>{escape(name)}</name>\n    <pose>Unspecified</pose>\n"
            f"    <truncated>0</truncated>\n    <difficult>{int(diff)}</difficult>\n"
            f"    <bndbox><xmin>{round(x1) + 1}</xmin><ymin>{round(y1) + 1}</ymin>"
            f"<xmax>{round(x2)}</xmax><ymax>{round(y2)}</ymax></bndbox>\n  </object>\n")
    text = (f"<annotation>\n  <filename>{escape(filename)}</filename>\n"
            f"  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n"
            + "".join(objs) + "</annotation>\n")
    xml_path = Path(xml_path)
    tmp = xml_path.with_name(f".{xml_path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(xml_path)
    return xml_path


def _find_image(xml_path: Path, filename: str | None, image_dirs: Sequence[Path],
                need_image: bool = True) -> Path | None:
    stems = [xml_path.stem] + ([Path(filename).stem] if filename else [])
    for d in image_dirs:
        if filename and (d / Path(filename).name).is_file():
            return d / Path(filename).name
        for stem in stems:
            for ext in IMAGE_EXTS:
                if (d / f"{stem}{ext}").is_file():
                    return d / f"{stem}{ext}"
    if not need_image:
        return None
    raise AnnotationError(f"{xml_path}: no image for it in {[str(d) for d in image_dirs]} "
                          f"(looked for {stems[0]}.* and {filename!r})")


def _to_annotation(xml_path: Path, raw: dict, image_path: Path | None,
                   class_index: dict[str, int]) -> Annotation:
    if image_path is None:  # evaluation reads only the XML, as the devkit does
        if raw["size"][0] < 1 or raw["size"][1] < 1:
            raise AnnotationError(f"{xml_path}: no image beside it and no <size> in it")
        h, w = raw["size"]
        image_path = xml_path.with_suffix(".jpg")  # where it would be; never opened
    else:
        h, w = read_image_size(image_path)
    if raw["size"] != (h, w) and raw["size"] != (0, 0):
        log.warning("%s says the image is %s (H, W) but %s is %s; using the image", xml_path,
                    raw["size"], image_path.name, (h, w))
    boxes, labels, difficult = [], [], []
    for name, (x1, y1, x2, y2), diff in raw["objects"]:
        if name not in class_index:
            continue
        box = np.array([x1 - 1.0, y1 - 1.0, x2, y2], np.float64)  # 1-based inclusive -> xyxy
        clipped = np.clip(box, 0, [w, h, w, h])
        if not np.array_equal(clipped, box):
            log.warning("%s: %s box %s reaches outside the %dx%d image; clipped", xml_path, name,
                        (x1, y1, x2, y2), w, h)
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            log.warning("%s: %s box %s is empty after clipping; dropped", xml_path, name,
                        (x1, y1, x2, y2))
            continue
        boxes.append(clipped)
        labels.append(class_index[name])
        difficult.append(diff)
    return Annotation(xml_path.stem, image_path, (h, w), np.array(boxes).reshape(-1, 4),
                      labels, difficult, xml_path)


def _layout(root: Path) -> tuple[list[Path], list[Path]]:
    """(annotation files, image folders to look in)."""
    for ann_dir, img_dir in (("Annotations", "JPEGImages"), ("annotations", "images")):
        if (root / ann_dir).is_dir():
            return sorted((root / ann_dir).glob("*.xml")), [root / img_dir, root / ann_dir, root]
    return sorted(root.glob("*.xml")), [root]


def _split_xmls(root: Path, split: str, xmls: list[Path]) -> list[Path]:
    """The XML files of the ids a split lists (``ImageSets/Main/<split>.txt`` or any ``.txt``
    of ids), in its order; an id without an XML is an error naming it."""
    given = Path(split)
    list_file = given if given.suffix == ".txt" and given.is_file() else (
        root / "ImageSets" / "Main" / f"{split}.txt")
    if not list_file.is_file():
        raise FileNotFoundError(f"split {split!r}: {list_file} does not exist")
    wanted = [ln.split()[0] for ln in list_file.read_text().splitlines() if ln.strip()]
    by_stem = {p.stem: p for p in xmls}
    missing = [i for i in wanted if i not in by_stem]
    if missing:
        raise FileNotFoundError(f"{list_file} lists {len(missing)} id(s) with no XML in "
                                f"{root}: {missing[:5]}")
    return [by_stem[i] for i in wanted]


def load_voc(root: str | Path, split: str | None = None,
             classes: Sequence[str] | None = None, need_images: bool = True) -> VOCDataset:
    """Load a VOC-format folder.

    Args:
        root: the folder (any of the layouts in the module docstring).
        split: an id list: ``ImageSets/Main/<split>.txt``, or the path of any ``.txt`` file
            of image ids (one per line) — for folders without ImageSets.
        classes: class names in label order; by default the sorted names found in the data.
            Objects of other classes are ignored.
        need_images: False for evaluation, which needs only the XML: an annotation without an
            image takes its size from ``<size>``.

    Files that cannot be used (malformed XML, no image) are skipped with a warning naming them
    and listed in ``skipped``; the rest load.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"VOC folder {root} does not exist")
    xmls, image_dirs = _layout(root)
    if split is not None:
        xmls = _split_xmls(root, split, xmls)
    if not xmls:
        raise FileNotFoundError(f"no VOC XML files in {root} (looked in Annotations/, "
                                "annotations/ and the folder itself)")
    raws, skipped = [], {}
    for xml in xmls:
        try:
            raw = parse_voc_xml(xml)
            raws.append((xml, raw, _find_image(xml, raw["filename"], image_dirs, need_images)))
        except AnnotationError as e:
            log.warning("skipping %s", e)
            skipped[str(xml)] = str(e)
    if not raws:  # every XML was skipped: say why, not "no objects"
        why = next(iter(skipped.values()))
        raise ValueError(f"{root}: none of its {len(xmls)} XML file(s) can be used; the first: "
                         f"{why}")
    found = sorted({o[0] for _, raw, _ in raws for o in raw["objects"]})
    names = list(classes) if classes is not None else found
    if not names:
        raise ValueError(f"{root}: no objects in any of its {len(raws)} annotation(s) and no "
                         "classes given")
    index = {c: i for i, c in enumerate(names)}
    anns = []
    for xml, raw, image in raws:
        try:
            anns.append(_to_annotation(xml, raw, image, index))
        except (OSError, AnnotationError, Image.DecompressionBombError) as e:  # bad header
            log.warning("skipping %s: %s", xml, e)
            skipped[str(xml)] = f"image {image}: {e}"
    return VOCDataset(root, names, anns, skipped, found)
