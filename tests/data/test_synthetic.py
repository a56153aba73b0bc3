"""The generated detection set: deterministic, exact boxes, readable by the VOC loader."""

from __future__ import annotations

import numpy as np

from sppnet.data.decode import decode_image
from sppnet.data.synthetic import (
    CLASSES,
    OBJECT_RANGE,
    SIDE_RANGE,
    background_photos,
    make_image,
    write_voc_folder,
)
from sppnet.data.voc import load_voc, parse_voc_xml, write_voc_xml


def test_same_seed_same_pixels_and_boxes():
    photos = background_photos()
    assert len(photos) == 5 and all(p.ndim == 3 and p.shape[2] == 3 for p in photos)
    a = make_image(np.random.default_rng([3, 1]), photos)
    b = make_image(np.random.default_rng([3, 1]), photos)
    c = make_image(np.random.default_rng([3, 2]), photos)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_images_objects_and_boxes_are_as_documented():
    photos = background_photos()
    n_objects = []
    for k in range(25):
        s = make_image(np.random.default_rng([0, k]), photos)
        h, w = s.image.shape[:2]
        assert SIDE_RANGE[0] <= max(h, w) <= SIDE_RANGE[1]
        assert 1 <= len(s.boxes) == len(s.labels) <= 4
        assert set(s.labels.tolist()) <= set(range(len(CLASSES)))
        b = s.boxes
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        hs = b[:, 3] - b[:, 1]
        assert (hs <= OBJECT_RANGE[1] * min(h, w) + 1).all() and (hs >= 4).all()
        for i in range(len(b)):  # objects never overlap
            for j in range(i + 1, len(b)):
                ix = min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0])
                iy = min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1])
                assert ix <= 0 or iy <= 0
        n_objects.append(len(b))
    assert len(set(n_objects)) > 1


def test_boxes_are_tight_around_the_drawn_object():
    """Draw the same image with and without its objects (same random stream up to the
    objects): the pixels that changed lie inside the boxes and touch every box edge."""
    photos = background_photos()
    for k in range(6):
        s = make_image(np.random.default_rng([7, k]), photos)
        # re-render with a uniform black background to see the object masks
        flat = [np.zeros_like(p) for p in photos]
        m = make_image(np.random.default_rng([7, k]), flat)
        np.testing.assert_array_equal(m.boxes, s.boxes)
        fg = m.image.max(2) > 60  # background: black + a brightness offset <= 20 + noise
        inside = np.zeros_like(fg)
        for x0, y0, x1, y1 in s.boxes.astype(int):
            inside[y0:y1, x0:x1] = True
            sub = fg[y0:y1, x0:x1]
            # anti-aliased edges and dark outlines (a star's tip is all outline) are not
            # bright, so the first bright pixel may sit a few rows in
            ty, tx = max(4, round(0.08 * (y1 - y0))), max(4, round(0.08 * (x1 - x0)))
            assert sub[:ty].any() and sub[-ty:].any(), "top/bottom edge not tight"
            assert sub[:, :tx].any() and sub[:, -tx:].any(), "left/right edge not tight"
        assert not (fg & ~inside).any(), "object pixels outside the boxes"


def test_voc_folder_round_trip(tmp_path):
    xmls = write_voc_folder(tmp_path / "set", 6, seed=5, prefix="t")
    assert [p.name for p in xmls] == [f"t_{k:05d}.xml" for k in range(6)]
    ds = load_voc(tmp_path / "set", classes=CLASSES)
    assert len(ds) == 6 and not ds.skipped
    photos = background_photos()
    for k, a in enumerate(ds):
        s = make_image(np.random.default_rng([5, k]), photos)
        np.testing.assert_array_equal(a.boxes, s.boxes)  # VOC's 1-based inclusive, undone
        np.testing.assert_array_equal(a.labels, s.labels)
        assert decode_image(a.image_path).shape == s.image.shape


def test_write_voc_xml_escapes_and_checks(tmp_path):
    p = write_voc_xml(tmp_path / "a.xml", "a&b.jpg", (30, 40), np.array([[0, 1, 10, 12]]),
                      ["cat<1>"], [True])
    raw = parse_voc_xml(p)
    assert raw["filename"] == "a&b.jpg" and raw["size"] == (30, 40)
    assert raw["objects"] == [("cat<1>", (1.0, 2.0, 10.0, 12.0), True)]
    import pytest

    with pytest.raises(ValueError, match="names has 2 entries for 1 boxes"):
        write_voc_xml(tmp_path / "b.xml", "b.jpg", (30, 40), np.zeros((1, 4)), ["x", "y"])
