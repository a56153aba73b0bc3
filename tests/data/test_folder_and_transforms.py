import logging

import numpy as np
import pytest
import torch
from PIL import Image

from sppnet.data.folder import ClassFolder, DecodedImages, split_per_class
from sppnet.data.transforms import crop, crop_boxes, lighting, resize_shorter, to_tensor


def make_folder(root, counts, size=(24, 32)):
    for c, n in counts.items():
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((*size, 3), 10 * i, np.uint8)).save(root / c / f"{i:03d}.png")
    return root


def test_scan_sorted_classes_and_empty_folders(tmp_path, caplog):
    make_folder(tmp_path, {"b": 3, "a": 2})
    (tmp_path / "empty").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("x")
    with caplog.at_level(logging.WARNING):
        folder = ClassFolder.scan(tmp_path)
    assert folder.classes == ["a", "b"] and folder.counts() == [2, 3]
    assert folder.empty_classes == ["empty"]
    assert "empty" in caplog.text and "hold no images" in caplog.text
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClassFolder.scan(tmp_path / "nope")
    with pytest.raises(ValueError, match="no image files"):
        ClassFolder.scan(tmp_path / "empty")


def test_split_per_class_is_seeded_disjoint_and_per_class(tmp_path):
    folder = ClassFolder.scan(make_folder(tmp_path, {"a": 10, "b": 4, "c": 7}))
    train, val, test = split_per_class(folder.samples, [3, 2, None], seed=1)
    assert [sum(s.label == k for s in train) for k in range(3)] == [3, 3, 3]
    assert [sum(s.label == k for s in val) for k in range(3)] == [2, 1, 2]
    assert len(test) == 5 + 0 + 2
    names = [s.path for s in train + val + test]
    assert len(names) == len(set(names)) == 21
    again = split_per_class(folder.samples, [3, 2, None], seed=1)
    assert [s.path for s in again[0]] == [s.path for s in train]
    other = split_per_class(folder.samples, [3, 2, None], seed=2)
    assert [s.path for s in other[0]] != [s.path for s in train]
    frac = split_per_class(folder.samples, [0.5, 0.5], seed=0)
    assert len(frac[0]) == 5 + 2 + 4 and len(frac[0]) + len(frac[1]) == 21


def test_decoded_images_skip_bad_files_with_a_named_warning(tmp_path, caplog):
    folder = ClassFolder.scan(make_folder(tmp_path, {"a": 2}))
    (tmp_path / "a" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    folder = ClassFolder.scan(tmp_path)
    imgs = DecodedImages(folder.samples, resize=16, min_size=8)
    with caplog.at_level(logging.WARNING):
        imgs.preload(progress=False)
    assert [imgs.load(i) is None for i in range(3)] == [False, False, True]
    assert min(imgs.load(0).shape[:2]) == 16
    assert list(imgs.failed) == [tmp_path / "a" / "zz_broken.jpg"]
    assert "zz_broken.jpg" in caplog.text


def test_resize_and_crops():
    img = np.zeros((300, 500, 3), np.uint8)
    assert resize_shorter(img, 256).shape == (256, 427, 3)
    assert resize_shorter(np.zeros((500, 300, 3), np.uint8), 256).shape == (427, 256, 3)
    boxes = crop_boxes((256, 427), 224)
    assert boxes == {"center": (16, 101), "top_left": (0, 0), "top_right": (0, 203),
                     "bottom_left": (32, 0), "bottom_right": (32, 203)}
    marked = np.zeros((256, 427, 3), np.uint8)
    marked[255, 426] = 9
    assert crop(marked, 224, "bottom_right")[223, 223, 0] == 9
    with pytest.raises(ValueError, match="larger than the image"):
        crop_boxes((100, 100), 224)


def test_lighting_is_seeded_and_to_tensor_mean():
    img = np.full((4, 4, 3), 100, np.uint8)
    a = lighting(img, np.random.default_rng(3))
    b = lighting(img, np.random.default_rng(3))
    assert np.array_equal(a, b) and a.dtype == np.float32 and not np.array_equal(a, img)
    assert np.allclose(a - a[0, 0], 0)  # one colour shift for all pixels
    t = to_tensor(img, 128.0, 1 / 128)
    assert t.shape == (3, 4, 4) and torch.allclose(t, torch.full((3, 4, 4), -28 / 128))
    mean_image = torch.full((3, 8, 8), 100.0)  # warped to the input size
    assert torch.allclose(to_tensor(img, mean_image, 1.0), torch.zeros(3, 4, 4))


def test_a_small_image_is_resized_once_as_eval_cls_resizes_it(tmp_path):
    """Training's decode cache and eval-cls must see the same pixels: a 60x90 photo goes to
    shorter side 128 in one resize, not 60 -> min_size 100 -> 128 (two resamplings)."""
    from sppnet.data.decode import decode_image

    rng = np.random.default_rng(1)
    (tmp_path / "c").mkdir()
    Image.fromarray(rng.integers(0, 256, (60, 90, 3), np.uint8)).save(tmp_path / "c" / "a.png")
    folder = ClassFolder.scan(tmp_path)
    got = DecodedImages(folder.samples, resize=128, min_size=100).load(0)
    want = resize_shorter(decode_image(tmp_path / "c" / "a.png"), 128)
    assert got.shape == want.shape == (128, 192, 3)
    np.testing.assert_array_equal(got, want)
