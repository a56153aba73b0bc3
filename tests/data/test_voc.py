"""VOC-format loading: layouts, coordinate conversion, the messy cases, each with a message."""

import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from sppnet.data.voc import AnnotationError, load_voc, parse_voc_xml
from tests.shared_data import need

XML = """<annotation><filename>{name}</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = ("<object><name>{c}</name><difficult>{d}</difficult><bndbox><xmin>{x1}</xmin>"
       "<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def _write(folder, stem, size, objects, image=True, xml_size=None):
    h, w = size
    if image:
        Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(folder / f"{stem}.jpg")
    xh, xw = xml_size if xml_size is not None else size
    objs = "".join(OBJ.format(c=c, d=d, x1=b[0], y1=b[1], x2=b[2], y2=b[3])
                   for c, b, d in objects)
    (folder / f"{stem}.xml").write_text(XML.format(name=f"{stem}.jpg", w=xw, h=xh,
                                                   objects=objs))


def test_side_by_side_folder_and_the_coordinate_conversion(tmp_path):
    _write(tmp_path, "a", (60, 80), [("dog", (1, 1, 80, 60), 0), ("cat", (11, 21, 30, 40), 1)])
    ds = load_voc(tmp_path)
    assert ds.classes == ["cat", "dog"]
    a = ds[0]
    assert a.image_size == (60, 80)
    # 1-based inclusive [1, 80] -> continuous [0, 80]
    np.testing.assert_array_equal(a.boxes, [[0, 0, 80, 60], [10, 20, 30, 40]])
    np.testing.assert_array_equal(a.labels, [1, 0])
    np.testing.assert_array_equal(a.difficult, [False, True])


def test_bad_files_are_skipped_with_a_message_and_the_rest_load(tmp_path, caplog):
    _write(tmp_path, "good", (50, 50), [("dog", (5, 5, 20, 20), 0)])
    (tmp_path / "broken.xml").write_text("<annotation><object>")  # malformed
    _write(tmp_path, "noimage", (50, 50), [("dog", (5, 5, 20, 20), 0)], image=False)
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            '<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><annotation>&lol2;</annotation>')
    (tmp_path / "bomb.xml").write_text(bomb)
    _write(tmp_path, "outside", (40, 50), [("dog", (30, 20, 70, 45), 0)])
    _write(tmp_path, "empty", (40, 50), [])
    _write(tmp_path, "liar", (40, 50), [("dog", (1, 1, 10, 10), 0)], xml_size=(0, 0))
    with caplog.at_level(logging.WARNING):
        ds = load_voc(tmp_path)
    assert sorted(a.image_id for a in ds) == ["empty", "good", "liar", "outside"]
    assert set(map(lambda p: p.split("/")[-1], ds.skipped)) == {"broken.xml", "noimage.xml",
                                                                "bomb.xml"}
    assert "not valid (or unsafe) XML" in ds.skipped[str(tmp_path / "bomb.xml")]
    assert "no image" in ds.skipped[str(tmp_path / "noimage.xml")]
    out = next(a for a in ds if a.image_id == "outside")
    np.testing.assert_array_equal(out.boxes, [[29, 19, 50, 40]])  # clipped to the image
    assert "reaches outside" in caplog.text
    assert next(a for a in ds if a.image_id == "empty").boxes.shape == (0, 4)
    assert next(a for a in ds if a.image_id == "liar").image_size == (40, 50)


def test_parse_errors_name_the_file(tmp_path):
    p = tmp_path / "x.xml"
    p.write_text("<annotation><object><name>a</name><bndbox><xmin>q</xmin></bndbox></object>"
                 "</annotation>")
    with pytest.raises(AnnotationError, match="x.xml.*xmin"):
        parse_voc_xml(p)
    p.write_text("<notvoc/>")
    with pytest.raises(AnnotationError, match="expected <annotation>"):
        parse_voc_xml(p)


def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_voc(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no VOC XML"):
        load_voc(tmp_path)


def test_devkit_layout_with_a_split_on_real_voc(tmp_path):
    src = need("voc100")
    for sub in ("Annotations", "JPEGImages"):
        (tmp_path / sub).symlink_to(src / sub)
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("2007_000027\n2007_000032\n")
    classes = (src / "voc.names").read_text().split()
    ds = load_voc(tmp_path, "val", classes)
    assert [a.image_id for a in ds] == ["2007_000027", "2007_000032"]
    assert ds.classes == classes
    full = load_voc(src, classes=classes)
    assert len(full) == 100
    assert sum(len(a.boxes) for a in full) == 273
    assert sum(int(a.difficult.sum()) for a in full) == 38
    with pytest.raises(FileNotFoundError, match="test.txt"):
        load_voc(tmp_path, "test")


def test_fruit_zero_sizes_and_png_named_jpg(tmp_path):
    src = need("fruit/train")
    ds = load_voc(src)
    assert ds.classes == ["apple", "banana", "orange"]
    assert len(ds) == 240 and not ds.skipped
    for a in ds:  # sizes come from the images, boxes lie inside them
        h, w = a.image_size
        assert h > 0 and w > 0
        assert (a.boxes[:, 2] <= w).all() and (a.boxes[:, 3] <= h).all()


def test_raccoon_split_folders():
    ds = load_voc(need("raccoon"))
    assert ds.classes == ["raccoon"] and len(ds) == 200
    assert sum(len(a.boxes) for a in ds) == 217


def test_an_unreadable_image_is_skipped(tmp_path):
    _write(tmp_path, "a", (30, 30), [("dog", (1, 1, 10, 10), 0)])
    _write(tmp_path, "b", (30, 30), [("dog", (1, 1, 10, 10), 0)])
    (tmp_path / "b.jpg").write_bytes(b"not an image")
    ds = load_voc(tmp_path)
    assert [a.image_id for a in ds] == ["a"]
    assert "b.xml" in next(iter(ds.skipped))
    shutil.rmtree(tmp_path)


def test_split_from_any_id_file(tmp_path):
    _write(tmp_path, "a", (30, 30), [("dog", (1, 1, 10, 10), 0)])
    _write(tmp_path, "b", (30, 30), [("dog", (1, 1, 10, 10), 0)])
    ids = tmp_path / "mine.txt"
    ids.write_text("b\n")
    assert [a.image_id for a in load_voc(tmp_path, str(ids))] == ["b"]


def test_a_folder_of_xml_without_images_says_so(tmp_path):
    from sppnet.data.synthetic import write_voc_folder

    write_voc_folder(tmp_path, 3, seed=2, prefix="v")
    for jpg in tmp_path.glob("*.jpg"):
        jpg.unlink()
    with pytest.raises(ValueError, match=r"none of its 3 XML file\(s\) can be used; the first: "
                                         r".*no image for it"):
        load_voc(tmp_path)
    assert len(load_voc(tmp_path, need_images=False)) == 3  # evaluation reads the XML alone
