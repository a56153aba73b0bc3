"""Decode real-world image files to RGB ``uint8`` arrays ``(H, W, 3)``.

Handles what photo folders contain: grayscale, CMYK, palette (with or without transparency), RGBA /
LA (composited on white), 16-bit and 32-bit integer or float images (rescaled to 8 bits), EXIF
orientation, and files whose extension lies (PNG bytes in a ``.jpg``: Pillow reads the content, not
the name). Truncated or corrupt files raise :class:`ImageDecodeError` naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageDecodeError", "decode_image", "IMAGE_EXTENSIONS", "is_image_file",
           "list_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm", ".pbm")


def is_image_file(path: Path) -> bool:
    """The one test of "is this an image file" for every reader (any case of the extension)."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if is_image_file(p))


class ImageDecodeError(ValueError):
    """A file that cannot be decoded as an image; the message names the file and the reason."""


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else float(arr.max()) or 1.0
        lo = 0.0 if mode.startswith("I;16") else min(float(arr.min()), 0.0)
        arr8 = np.clip((arr - lo) / max(hi - lo, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode != "RGB":
        return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return img


def decode_image(path: str | Path) -> np.ndarray:
    """Read ``path`` as an RGB ``uint8`` array of shape ``(H, W, 3)``, EXIF orientation applied.

    Raises:
        ImageDecodeError: the file is missing, not an image, truncated or corrupt.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # raises on truncated data (LOAD_TRUNCATED_IMAGES stays False)
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img)
                arr = np.asarray(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as e:  # a bomb is one more unreadable file
        raise ImageDecodeError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageDecodeError(f"{path}: decoded to an unusable array of shape {arr.shape}")
    return np.ascontiguousarray(arr)
