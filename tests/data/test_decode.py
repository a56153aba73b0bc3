"""Real files through real decoders: every awkward kind of photo a folder holds."""

import io

import numpy as np
import pytest
from PIL import Image

from sppnet.data.decode import ImageDecodeError, decode_image
from sppnet.data.transforms import ensure_min_size


def _gradient(h=20, w=30):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 8 % 256, y * 12 % 256, (x + y) * 4 % 256], -1).astype(np.uint8)


def test_rgb_jpeg_and_png(tmp_path):
    Image.fromarray(_gradient()).save(tmp_path / "a.png")
    Image.fromarray(_gradient()).save(tmp_path / "a.jpg", quality=95)
    png = decode_image(tmp_path / "a.png")
    assert png.shape == (20, 30, 3) and png.dtype == np.uint8
    assert np.array_equal(png, _gradient())
    assert np.abs(decode_image(tmp_path / "a.jpg").astype(int) - _gradient()).mean() < 6


def test_grayscale_cmyk_palette(tmp_path):
    Image.fromarray(np.full((8, 9), 77, np.uint8), "L").save(tmp_path / "g.jpg")
    Image.fromarray(_gradient()).convert("CMYK").save(tmp_path / "c.jpg")
    Image.fromarray(_gradient()).convert("P").save(tmp_path / "p.png")
    g = decode_image(tmp_path / "g.jpg")
    assert g.shape == (8, 9, 3) and abs(int(g[4, 4, 0]) - 77) <= 2
    assert decode_image(tmp_path / "c.jpg").shape == (20, 30, 3)
    assert decode_image(tmp_path / "p.png").shape == (20, 30, 3)


def test_rgba_and_transparent_palette_composite_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = decode_image(tmp_path / "a.png")
    assert out[0, 0].tolist() == [255, 0, 0] and out[3, 3].tolist() == [255, 255, 255]
    pal = Image.fromarray(np.zeros((4, 4), np.uint8), "P")
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "t.png", transparency=0)
    assert decode_image(tmp_path / "t.png")[0, 0].tolist() == [255, 255, 255]


def test_16_bit_is_rescaled_not_clipped(tmp_path):
    arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    img.save(tmp_path / "d.png")
    out = decode_image(tmp_path / "d.png")
    assert out.shape == (8, 8, 3)
    assert out[0, 0, 0] == 0 and out[7, 7, 0] == round(63000 / 65535 * 255)
    assert len(np.unique(out[..., 0])) > 32  # a ramp, not a saturated white image


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(_gradient(10, 40))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert decode_image(tmp_path / "r.jpg").shape == (40, 10, 3)


def test_png_bytes_behind_a_jpg_name(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_gradient()).save(buf, format="PNG")
    (tmp_path / "liar.jpg").write_bytes(buf.getvalue())
    assert np.array_equal(decode_image(tmp_path / "liar.jpg"), _gradient())


def test_truncated_corrupt_missing_and_non_images_name_the_file(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
                    ).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (tmp_path / "text.jpg").write_text("not an image at all")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("cut.jpg", "text.jpg", "empty.png", "missing.jpg"):
        with pytest.raises(ImageDecodeError, match=name):
            decode_image(tmp_path / name)


def test_tiny_images_are_upscaled():
    tiny = np.zeros((3, 2, 3), np.uint8)
    out = ensure_min_size(tiny, 39)
    assert min(out.shape[:2]) == 39 and out.shape[0] > out.shape[1]
    assert ensure_min_size(np.zeros((50, 60, 3), np.uint8), 39).shape == (50, 60, 3)
