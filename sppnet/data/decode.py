"""Decode real-world image files — and every other image input — to RGB ``uint8`` arrays
``(H, W, 3)``, by one rule.

Handles what photo folders contain: grayscale, CMYK, palette (with or without transparency), RGBA /
LA (composited on white), 16-bit and 32-bit integer or float images, EXIF orientation, and files
whose extension lies (PNG bytes in a ``.jpg``: Pillow reads the content, not the name). Truncated
or corrupt files raise :class:`ImageDecodeError` naming the file.

**The one rule** (:func:`to_rgb_array`), the same for files, PIL images, NumPy arrays and torch
tensors, so one picture gives one array whichever way it comes in:

1. *Layout.* Files and PIL images: EXIF orientation applied. Arrays are ``(H, W)``,
   ``(H, W, C)``; tensors ``(H, W)`` or ``(C, H, W)`` (torchvision's layout); ``C`` is 1 (grey),
   2 (grey + alpha), 3 (RGB) or 4 (RGBA).
2. *Values*, by dtype and range (PIL's 8-bit modes are ``uint8``; ``I;16`` is ``uint16``,
   ``I`` int32 and ``F`` float32):

   - ``bool``: ``False`` 0, ``True`` 255;
   - ``uint8``: as they are;
   - ``uint16``: ``v * 255 / 65535`` (16-bit images keep their tones, never clipped);
   - other integers and floats, by their range ``[lo, hi]`` (NaN or inf is an error):
     floats within ``[0, 1]``: ``v * 255`` (the torchvision convention);
     within ``[0, 255]``: as 8-bit values; within ``[0, 65535]``: as 16-bit values;
     otherwise ``[min(lo, 0), hi]`` is stretched to ``[0, 255]``.

   Values are then rounded to the nearest integer.
3. *Channels.* Grey is repeated to RGB; alpha composites the image on white.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageDecodeError", "decode_image", "to_rgb_array", "to_uint8", "IMAGE_EXTENSIONS",
           "is_image_file", "list_images"]

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


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Step 2 of the rule (module docstring): any array's values as ``uint8``."""
    a = np.asarray(values)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"an image must hold numbers, got dtype {a.dtype}")
    x = a.astype(np.float64)
    if a.size == 0:
        return x.astype(np.uint8)
    if not np.isfinite(x).all():
        raise ValueError("an image holds NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if a.dtype == np.uint16 or (lo >= 0 and 255 < hi <= 65535):
        scale, base = 255.0 / 65535.0, 0.0
    elif np.issubdtype(a.dtype, np.floating) and lo >= 0 and hi <= 1:
        scale, base = 255.0, 0.0
    elif lo >= 0 and hi <= 255:
        scale, base = 1.0, 0.0
    else:
        base = min(lo, 0.0)
        scale = 255.0 / max(hi - base, 1e-12)
    return np.clip(np.floor((x - base) * scale + 0.5), 0, 255).astype(np.uint8)


def _channels_to_rgb(a: np.ndarray) -> np.ndarray:
    """Step 3: ``(H, W, C)`` uint8 with C in 1..4 -> RGB (grey repeated, alpha on white)."""
    c = a.shape[2]
    if c in (2, 4):
        alpha = a[..., -1:].astype(np.float64) / 255.0
        colour = a[..., :-1].astype(np.float64)
        a = np.floor(colour * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
        c -= 1
    return np.repeat(a, 3, 2) if c == 1 else a


def _array_to_rgb(a: np.ndarray, what: str) -> np.ndarray:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        hint = (" (a (C, H, W) layout is a tensor's: pass torch.from_numpy(array))"
                if a.ndim == 3 and a.shape[0] in (1, 3, 4) else "")
        raise ValueError(f"{what} must be (H, W) or (H, W, C) with C in 1-4, got shape "
                         f"{a.shape}{hint}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{what} is empty: shape {a.shape}")
    return np.ascontiguousarray(_channels_to_rgb(to_uint8(a)))


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A loaded PIL image (EXIF already applied) by the rule."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        if mode.startswith("I;16"):
            arr = arr.astype(np.uint16)
        return _array_to_rgb(arr, f"a {mode} image")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _array_to_rgb(np.asarray(img.convert("RGBA")), f"a {mode} image")
    if mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.asarray(img, dtype=np.uint8)


def to_rgb_array(image) -> np.ndarray:
    """An RGB ``(H, W, 3)`` uint8 array from a path, a PIL image, a NumPy array or a torch
    tensor, by the one rule of this module's docstring. Raises ``ValueError`` (a path that
    cannot be decoded: :class:`ImageDecodeError`) naming what is wrong."""
    if isinstance(image, (str, Path)):
        return decode_image(image)
    if isinstance(image, Image.Image):
        image.load()
        return np.ascontiguousarray(_pil_to_rgb(ImageOps.exif_transpose(image)))
    if type(image).__module__.startswith("torch"):
        t = image.detach().cpu()
        if t.dim() == 3:
            if t.shape[0] not in (1, 2, 3, 4):
                raise ValueError(f"an image tensor must be (C, H, W) with C in 1-4, got "
                                 f"{tuple(t.shape)}")
            t = t.permute(1, 2, 0)
        elif t.dim() != 2:
            raise ValueError(f"an image tensor must be (C, H, W) or (H, W), got "
                             f"{tuple(t.shape)}")
        if t.dtype.is_floating_point:  # (bfloat16 has no NumPy twin)
            t = t.double()
        return _array_to_rgb(t.numpy(), "an image tensor")
    return _array_to_rgb(np.asarray(image), "an image array")


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
                arr = _pil_to_rgb(img)
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as e:  # a bomb is one more unreadable file
        raise ImageDecodeError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageDecodeError(f"{path}: decoded to an unusable array of shape {arr.shape}")
    return np.ascontiguousarray(arr)
